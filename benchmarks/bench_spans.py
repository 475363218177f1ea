"""Span cost per diagnosis request (3 spans: diagnosis, gnn.inference, rag.generation).

Cases: no SDK (the OTel API's no-op tracer), SDK with the ALWAYS_OFF sampler, a 1%
TraceIdRatioBased sampler and ALWAYS_ON, each exporting through a BatchSpanProcessor
to an exporter that drops the spans (so the network is not what is measured).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider

from mlops_otel.telemetry import Telemetry

from ._harness import Row, row, time_per_call

BENCH = "spans"


class _DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _request_loop(tel: Telemetry) -> Callable[[int], None]:
    @tel.track_diagnosis_request("create_diagnosis")
    def request() -> None:
        with tel.track_stage("gnn_inference", model_version="v2.1.0"):
            tel.record_gnn_metrics("v2.1.0", 12.0, 0.31, 0.93)
        with tel.track_stage("rag_generation", model_version="rag-1"):
            tel.record_rag_metrics("rag-1", 850.0, 640)

    def run(n: int) -> None:
        for _ in range(n):
            request()

    return run


def _sdk(sampler: Sampler) -> TracerProvider:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(_DropExporter(), max_queue_size=100_000))
    return provider


def run(quick: bool = False) -> list[Row]:
    n, repeat = (500, 3) if quick else (5_000, 7)
    cases = {
        "no SDK (API no-op)": NoOpTracerProvider(),
        "SDK, sampler off": _sdk(ALWAYS_OFF),
        "SDK, 1% sampled": _sdk(TraceIdRatioBased(0.01)),
        "SDK, 100% sampled": _sdk(ALWAYS_ON),
    }
    rows = []
    for name, provider in cases.items():
        runs = time_per_call(_request_loop(Telemetry(tracer_provider=provider)), n, repeat)
        rows.append(row(BENCH, name, runs, n, "per request: 3 spans + 8 measurements"))
        if isinstance(provider, TracerProvider):
            provider.shutdown()
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.case:24} {r.median_us:9.2f} us/request (min {r.min_us:.2f}, max {r.max_us:.2f})")
