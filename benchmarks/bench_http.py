"""The HTTP instrumentation alone: a one-route FastAPI app called directly through ASGI.

No sockets, no httpx: each request is one call of the app with a prepared scope, so what is
left is the framework and the instrumentation. Cases, interleaved round by round (one run of
*n* requests per case per round): the app with mlops-otel but no HTTP instrumentation
(``instrument_http=False``), with mlops-otel's ``HttpServerMiddleware``
(``instrument_http="light"``, the default) and with the OTel FastAPI instrumentation
(``instrument_http="otel"``). No OTel
SDK is configured: spans go to the API's no-op tracer, metrics to the no-op meter, as in a
service that only scrapes ``/metrics``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI

from mlops_otel.fastapi import instrument_app
from mlops_otel.stores import MemoryStore

BENCH = "http"
CASES: dict[str, Any] = {
    "no HTTP instrumentation": False,
    "mlops-otel HttpServerMiddleware (light, default)": "light",
    'OTel FastAPI instrumentation (instrument_http="otel")': "otel",
}
_SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
    "path": "/diagnosis/create", "raw_path": b"/diagnosis/create", "root_path": "", "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"content-length", b"2")],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
}


def _app(http: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/diagnosis/create")
    async def create() -> dict[str, int]:
        return {"ok": 1}

    instrument_app(app, store=MemoryStore(), instrument_http=http, metrics_path=None, install_as_default=False)
    return app


async def _drive(app: FastAPI, n: int) -> float:
    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    start = time.perf_counter()
    for _ in range(n):
        await app({**_SCOPE, "state": {}}, receive, send)
    return (time.perf_counter() - start) / n


async def _measure(n: int, repeat: int) -> dict[str, list[float]]:
    apps = {case: _app(http) for case, http in CASES.items()}
    runs: dict[str, list[float]] = {case: [] for case in apps}
    contexts = [app.router.lifespan_context(app) for app in apps.values()]
    for cm in contexts:
        await cm.__aenter__()
    try:
        for app in apps.values():
            await _drive(app, min(n, 200))
        for _ in range(repeat):
            for case, app in apps.items():
                runs[case].append(await _drive(app, n))
    finally:
        for cm in contexts:
            await cm.__aexit__(None, None, None)
    return runs


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, repeat = (200, 3) if quick else (2_000, 9)
    runs = asyncio.run(_measure(n, repeat))
    return [{"bench": BENCH, "case": case, "median_us": statistics.median(r) * 1e6, "min_us": min(r) * 1e6,
             "max_us": max(r) * 1e6, "n": n, "repeat": repeat} for case, r in runs.items()]


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """What each HTTP instrumentation adds per request, from the minimum over interleaved rounds."""
    by = {r["case"]: r["min_us"] for r in rows}
    base = by["no HTTP instrumentation"]
    light = by["mlops-otel HttpServerMiddleware (light, default)"] - base
    otel = by['OTel FastAPI instrumentation (instrument_http="otel")'] - base
    return [f"- Per request (minimum over rounds): the OTel FastAPI instrumentation adds **{otel:.0f} µs**, "
            f"mlops-otel's `HttpServerMiddleware` **{light:.0f} µs** ({otel / light if light > 0 else float('inf'):.0f}x "
            f"less), on a {base:.0f} µs request through FastAPI alone."]


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv)
    for r in out:
        print(f"{r['case']:42} {r['median_us']:8.1f} us (min {r['min_us']:.1f}, max {r['max_us']:.1f})")
    print("\n".join(summary(out)))
