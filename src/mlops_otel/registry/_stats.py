"""Kept for imports written against 0.1: the statistics live in :mod:`mlops_otel.stats`."""

from __future__ import annotations

from ..stats import CONFIDENCE_SHIFT, LATENCY_SHIFT_MS, Moments, SufficientStats

__all__ = ["CONFIDENCE_SHIFT", "LATENCY_SHIFT_MS", "Moments", "SufficientStats"]
