"""Kept for imports written against 0.1: the validation helpers live in :mod:`mlops_otel.validation`."""

from __future__ import annotations

from ..validation import InvalidValueError, check_name, check_result

__all__ = ["InvalidValueError", "check_name", "check_result"]
