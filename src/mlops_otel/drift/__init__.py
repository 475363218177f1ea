"""Drift detection: streaming KS and PSI on model outputs, shared across workers.

Pure statistics (:func:`ks_2samp`, :func:`psi`, :class:`ReferenceSample`, ...)
import only numpy and scipy; :class:`DriftDetector` keeps its windows on a
state store and :class:`DriftMonitor` owns the detectors of a process.
"""

from ._detector import DriftDetector, DriftLevel, DriftReport, OutputDrift
from ._monitor import DriftMonitor
from ._shared import detector_key, parse_detector_key
from ._stats import (
    ConfidenceInterval,
    KSResult,
    KSWorkspace,
    ReferenceSample,
    confidence_degradation,
    ks_2samp,
    ks_2samp_sorted,
    ks_pvalue,
    psi,
)

__all__ = [
    "ConfidenceInterval",
    "DriftDetector",
    "DriftLevel",
    "DriftMonitor",
    "DriftReport",
    "KSResult",
    "KSWorkspace",
    "OutputDrift",
    "ReferenceSample",
    "confidence_degradation",
    "detector_key",
    "ks_2samp",
    "ks_2samp_sorted",
    "ks_pvalue",
    "parse_detector_key",
    "psi",
]
