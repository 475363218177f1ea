"""Shared fixtures: real services on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .services import RedisServer, redis_cluster, redis_server


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisServer]:
    """A standalone redis-server shared by the session (tests use distinct key prefixes)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_fresh() -> Iterator[RedisServer]:
    """A redis-server of the test's own, e.g. to kill and restart it."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_durable() -> Iterator[RedisServer]:
    """A redis-server of the test's own with an fsync-always AOF: a kill loses no acknowledged write."""
    with redis_server(("--appendonly", "yes", "--appendfsync", "always")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[list[RedisServer]]:
    """A 3-master Redis Cluster shared by the session."""
    with redis_cluster(3) as servers:
        yield servers
