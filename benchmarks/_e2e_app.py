"""The example service as the end-to-end benchmark runs it: one ASGI app per case, chosen by env.

``uvicorn benchmarks._e2e_app:app`` reads (at import, which is start-up for uvicorn):

- ``EXAMPLE_WITHOUT_SDK=1``: the same models and flow without mlops-otel (the baseline);
- ``BENCH_HTTP``: ``light`` (default, as ``instrument_app``'s: mlops-otel's HttpServerMiddleware),
  ``otel`` (``instrument_http="otel"``: the OTel FastAPI instrumentation), ``none`` (``instrument_http=False``);
- ``BENCH_TRACE_RATIO``: unset for no OTel SDK (spans go to the API's no-op tracer), else a
  float in [0, 1]: an SDK ``TracerProvider`` sampling that share of traces
  (``ParentBased(TraceIdRatioBased)``) whose ``BatchSpanProcessor`` encodes every batch to OTLP
  protobuf and drops it, so the CPU of exporting is paid but no network is measured;
- ``BENCH_GIL_PROBE``: a file path; runs :class:`benchmarks._gilprobe.GilProbe` writing there
  (used by ``python -m benchmarks.profile_e2e``, never by the timed benchmark);
- the ``MLOPS_OTEL_*`` variables, as ``Runtime.from_env`` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from examples.diagnosis_service import app as example

__all__ = ["EncodeAndDropExporter", "app", "build"]


class EncodeAndDropExporter(SpanExporter):
    """Serialise each batch as the OTLP exporter would, then drop it: the export CPU without a network."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self.bytes += len(encode_spans(spans).SerializePartialToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _tracing(ratio: str | None) -> None:
    if ratio is None or ratio == "":
        return
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(float(ratio))))
    provider.add_span_processor(BatchSpanProcessor(EncodeAndDropExporter()))
    trace.set_tracer_provider(provider)


def build(env: dict[str, str] | None = None) -> Any:
    """The app of the case described by *env* (default ``os.environ``)."""
    e = dict(os.environ) if env is None else env
    if e.get("BENCH_GIL_PROBE"):
        from ._gilprobe import GilProbe

        GilProbe(e["BENCH_GIL_PROBE"]).start()
    if e.get("EXAMPLE_WITHOUT_SDK") == "1":
        return example.create_plain_app()
    _tracing(e.get("BENCH_TRACE_RATIO"))
    http = e.get("BENCH_HTTP", "light")
    choices: dict[str, Any] = {"light": "light", "otel": "otel", "none": False}
    if http not in choices:
        raise ValueError(f"BENCH_HTTP must be one of {sorted(choices)}, got {http!r}")
    return example.create_app(instrument_http=choices[http])


app = build()
