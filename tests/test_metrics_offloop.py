"""``Telemetry.metrics_app`` renders the exposition off the event loop's thread (#16), with the same answer."""

from __future__ import annotations

import asyncio
import gzip
import threading
from typing import Any

from mlops_otel.telemetry import FamilySnapshot, Telemetry


async def scrape(app: Any, headers: list[tuple[bytes, bytes]] | None = None) -> list[dict[str, Any]]:
    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": headers or []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_render_runs_in_another_thread_and_serves_the_exposition() -> None:
    tel = Telemetry()
    tel.record_gnn_metrics("v2.1.0", 12.0, 0.3, 0.9)
    render_threads: list[int] = []

    def source() -> list[FamilySnapshot]:
        render_threads.append(threading.get_ident())
        return tel.snapshot()

    tel.use_exposition_source(source)

    async def main() -> tuple[int, list[dict[str, Any]]]:
        return threading.get_ident(), await scrape(tel.metrics_app())

    loop_thread, sent = asyncio.run(main())
    assert render_threads
    assert loop_thread not in render_threads
    start, body = sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    assert b'gnn_confidence_count{model_version="v2.1.0"} 1.0' in body["body"]
    assert body["body"] == tel.render_prometheus()


def test_content_negotiation_is_kept() -> None:
    tel = Telemetry()
    tel.record_gnn_metrics("v2.1.0", 12.0, 0.3, 0.9)
    sent = asyncio.run(scrape(tel.metrics_app(), [(b"accept-encoding", b"gzip"),
                                                   (b"accept", b"application/openmetrics-text; version=1.0.0")]))
    start, body = sent
    headers = dict(start["headers"])
    assert headers[b"Content-Encoding"] == b"gzip"
    assert headers[b"Content-Type"].startswith(b"application/openmetrics-text")
    assert gzip.decompress(body["body"]).rstrip().endswith(b"# EOF")
