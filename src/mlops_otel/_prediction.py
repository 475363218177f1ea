"""``runtime.prediction()``: one call that records a prediction everywhere it belongs.

Replaces the five calls of 0.1 (``ab.assign_variant``, ``record_gnn_metrics``,
``ab.record_result``, ``registry.update_metrics`` and the drift detector's
``add_production_sample``) and the ``track_stage`` around them::

    with runtime.prediction("gnn", user_id=user) as p:
        model = models[p.version]
        score, confidence = model.predict(x)
        p.observe(anomaly_score=score, confidence=confidence)

On exit the result is recorded once into the seed metrics, the A/B test (when
the user is in one), the registry's running metrics and the version's drift
window. An exception inside the block is recorded as an error everywhere and
re-raised unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import semconv

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .telemetry import StageTracker

__all__ = ["Prediction", "current_prediction"]

F = TypeVar("F", bound=Callable[..., Any])

_CURRENT: contextvars.ContextVar[Prediction | None] = contextvars.ContextVar("mlops_otel_prediction", default=None)
_perf = time.perf_counter


def current_prediction() -> Prediction | None:
    """The innermost open :class:`Prediction` of this task or thread, or ``None``."""
    return _CURRENT.get()


class Prediction:
    """One prediction of *model_type*: a context manager (``with``/``async with``) or a decorator.

    On entry the A/B manager assigns the variant: :attr:`version` is the model
    version to run (the treatment or control version inside a test, else the
    champion, else *default_version*), :attr:`variant` is ``"control"``,
    ``"treatment"`` or ``"champion"``, and :attr:`test` the test's name or
    ``None``. The block is timed and runs inside the *stage* span (default
    ``"<model_type>_inference"``; keyword *attributes* are added to that span).
    Call :meth:`observe` with the model's outputs. On exit:

    * seed metrics: ``gnn_*`` histograms (when both outputs were observed),
      ``diagnosis_duration_seconds{stage}``, the request's model version and,
      on an exception, ``diagnosis_errors_total{error_type,stage}``;
    * the registry's running metrics of :attr:`version`;
    * the A/B result of :attr:`variant` (only inside a test), with the extra
      metrics given to :meth:`observe`;
    * the drift sample of :attr:`version` (when both outputs were observed).

    A failed block records ``error=True`` in the registry and the A/B test
    (without latency and confidence, as 0.1's error path did) and re-raises the
    exception unchanged. Recording never raises: faults are counted in
    ``mlops_internal_errors_total``. A :class:`Prediction` is used once; the
    decorator form opens a new one per call.
    """

    __slots__ = (
        "_done", "_start", "_token", "_tracker", "anomaly_score", "attributes", "confidence", "default_version",
        "embedding", "error_type", "extra", "features", "inference_time_ms", "model_type", "runtime", "stage",
        "test", "user_id", "variant", "version",
    )

    def __init__(
        self,
        runtime: Runtime,
        model_type: str,
        user_id: str | None = None,
        *,
        stage: str | None = None,
        default_version: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self.model_type = model_type
        self.user_id = user_id
        self.stage = stage if stage is not None else (
            semconv.STAGE_GNN_INFERENCE if model_type == "gnn" else f"{model_type}_inference")
        self.default_version = default_version
        self.attributes = attributes
        #: The model version to run (``None`` only when no test, champion or default names one).
        self.version: str | None = None
        #: ``"control"``, ``"treatment"`` or ``"champion"``.
        self.variant = "champion"
        #: The A/B test this prediction is part of, or ``None``.
        self.test: str | None = None
        self.anomaly_score: float | None = None
        self.confidence: float | None = None
        self.features: Mapping[str, float | str] | None = None
        self.embedding: Sequence[float] | Any | None = None
        self.extra: dict[str, float | bool] = {}
        #: Latency reported by :meth:`observe`; otherwise the block's wall time is used.
        self.inference_time_ms: float | None = None
        #: The exception's class name when the block failed.
        self.error_type: str | None = None
        self._tracker: StageTracker | None = None
        self._token: contextvars.Token[Prediction | None] | None = None
        self._start = 0.0
        self._done = False

    def __repr__(self) -> str:
        return (f"Prediction(model_type={self.model_type!r}, version={self.version!r}, variant={self.variant!r}, "
                f"test={self.test!r})")

    # ----------------------------------------------------------------- outputs
    def observe(
        self,
        anomaly_score: float | None = None,
        confidence: float | None = None,
        *,
        features: Mapping[str, float | str] | None = None,
        embedding: Sequence[float] | Any | None = None,
        inference_time_ms: float | None = None,
        **extra: float | bool,
    ) -> None:
        """Take the model's outputs (recorded on exit; calling again replaces them).

        *features* and *embedding* go to the drift detector, *inference_time_ms*
        replaces the measured wall time of the block, *extra* named numbers or
        bools go to the A/B result as custom metrics.
        """
        self.anomaly_score = anomaly_score
        self.confidence = confidence
        self.features = features
        self.embedding = embedding
        if inference_time_ms is not None:
            self.inference_time_ms = inference_time_ms
        if extra:
            self.extra = extra

    # ------------------------------------------------------------------- scope
    def __enter__(self) -> Prediction:
        if self._done or self._tracker is not None:
            raise RuntimeError("a Prediction is used once: call runtime.prediction(...) for each prediction")
        rt = self.runtime
        tel = rt.telemetry
        try:
            assignment = rt.ab.assign_variant(self.model_type, self.user_id)
            self.variant = assignment["name"]
            self.test = assignment["test"]
            self.version = assignment["version"] or self.default_version
        except Exception as exc:  # assignment never raises, but a broken runtime must not fail the request
            tel.fault("prediction.assign", exc)
            self.version = self.default_version
        tracker = self._tracker = tel.track_stage(self.stage, self.version, model_type=self.model_type)
        span = tracker.__enter__()
        if span.is_recording():
            try:
                if self.test is not None:
                    span.set_attribute(semconv.SPAN_ATTR_AB_TEST, self.test)
                    span.set_attribute(semconv.SPAN_ATTR_AB_VARIANT, self.variant)
                if self.attributes:
                    span.set_attributes(dict(self.attributes))
            except Exception as exc:
                tel.fault("prediction.attributes", exc)
        self._token = _CURRENT.set(self)
        self._start = _perf()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed_ms = (_perf() - self._start) * 1000.0
        tracker = self._tracker
        if tracker is None or self._done:
            return
        self._done = True
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        try:
            self._record(elapsed_ms, exc_type)
        finally:
            tracker.__exit__(exc_type, exc, tb)  # stage duration, error counter, span end

    async def __aenter__(self) -> Prediction:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _record(self, elapsed_ms: float, exc_type: type[BaseException] | None) -> None:
        rt = self.runtime
        tel = rt.telemetry
        version = self.version
        try:
            error = exc_type is not None
            if error:
                assert exc_type is not None
                self.error_type = exc_type.__name__
            if version is None:
                tel.invalid("prediction.model_version", None)  # no test, champion or default: nothing to attribute
                return
            latency = elapsed_ms if self.inference_time_ms is None else self.inference_time_ms
            score, conf = self.anomaly_score, self.confidence
            if score is not None and conf is not None:
                tel.record_gnn_metrics(version, latency, score, conf)
            else:
                tel.set_request_model_version(version)
            ok_latency = None if error else latency
            ok_conf = None if error else conf
            rt.registry.update_metrics(self.model_type, version, ok_latency, ok_conf, error=error)
            if self.test is not None:
                if self.extra:
                    # Contract 4 (#12): ABTestManager.record_result(metrics=...) is added by the ab branch;
                    # until it is on main, pass it only when given (a TypeError is counted as a fault).
                    rt.ab.record_result(self.test, self.variant, ok_latency, ok_conf, error=error,
                                        metrics=self.extra)  # type: ignore[call-arg]
                else:
                    rt.ab.record_result(self.test, self.variant, ok_latency, ok_conf, error=error)
            if score is not None and conf is not None:
                detector = rt.drift.get_detector(self.model_type, version)
                if self.features is not None or self.embedding is not None:
                    # Contract 4 (#17): features=/embedding= are added by the drift branch; until it is on
                    # main, pass them only when given.
                    detector.add_production_sample(score, conf, features=self.features,  # type: ignore[call-arg]
                                                   embedding=self.embedding)
                else:
                    detector.add_production_sample(score, conf)
        except Exception as exc:  # the caller's request must never fail because of us
            tel.fault("prediction.record", exc)

    # --------------------------------------------------------------- decorator
    def __call__(self, func: F) -> F:
        """Decorate a sync or async function: each call runs inside a new prediction.

        The user id is the call's ``user_id`` argument when the function has one
        (else the one given here); a parameter named ``prediction`` receives the
        open :class:`Prediction` (it is also :func:`current_prediction`).
        """
        rt, model_type, default_user = self.runtime, self.model_type, self.user_id
        options = {"stage": self.stage, "default_version": self.default_version, "attributes": self.attributes}
        sig = inspect.signature(func)
        inject = "prediction" in sig.parameters
        has_user = "user_id" in sig.parameters

        def open_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Prediction:
            user = default_user
            if has_user:
                with contextlib.suppress(TypeError):  # a wrong call: let func raise the real error
                    user = sig.bind_partial(*args, **kwargs).arguments.get("user_id", default_user)
            return Prediction(rt, model_type, user, stage=cast("str", options["stage"]),
                              default_version=cast("str | None", options["default_version"]),
                              attributes=cast("Mapping[str, Any] | None", options["attributes"]))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                p = open_for(args, kwargs)
                async with p:
                    if inject:
                        kwargs["prediction"] = p
                    return await func(*args, **kwargs)

            return cast("F", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            p = open_for(args, kwargs)
            with p:
                if inject:
                    kwargs["prediction"] = p
                return func(*args, **kwargs)

        return cast("F", wrapper)
