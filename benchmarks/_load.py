"""A bounded load generator for the example service: concurrent clients on loopback only."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter

import attrs
import httpx

__all__ = ["LoadResult", "run_load", "wait_until_ready"]


@attrs.frozen
class LoadResult:
    """What one load run sent and how long each request took."""

    latencies_ms: tuple[float, ...]
    statuses: Counter[int]
    seconds: float

    @property
    def sent(self) -> int:
        """Requests that got an HTTP answer."""
        return sum(self.statuses.values())

    def percentile(self, q: float) -> float:
        """The *q*-th percentile latency in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    @property
    def throughput(self) -> float:
        """Requests per second over the whole run."""
        return self.sent / self.seconds

    @property
    def p50(self) -> float:
        """Median latency (ms)."""
        return statistics.median(self.latencies_ms)


def wait_until_ready(url: str, timeout: float = 60.0) -> list[str]:
    """Wait for the service's lifespan to finish; return the equipment ids."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"{url}/equipment", timeout=5)
            if response.status_code == 200:
                return list(response.json())
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become ready")
        time.sleep(0.1)


async def _drive(url: str, requests: int, concurrency: int, seed: int, max_seconds: float) -> LoadResult:
    equipment = wait_until_ready(url)
    rng = random.Random(seed)
    payloads = [{"equipment_id": rng.choice(equipment), "user_id": f"user-{rng.randrange(10_000):05d}"}
                for _ in range(requests)]
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + max_seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                payload = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            response = await client.post("/diagnosis/create", json=payload)
            latencies.append((time.perf_counter() - start) * 1000)
            statuses[response.status_code] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return LoadResult(tuple(latencies), statuses, time.perf_counter() - started)


def run_load(url: str, *, requests: int, concurrency: int = 16, seed: int = 1, max_seconds: float = 300) -> LoadResult:
    """Send *requests* diagnosis requests from *concurrency* clients (stops after *max_seconds*)."""
    return asyncio.run(_drive(url, requests, concurrency, seed, max_seconds))
