"""Model registry: versions, champion/challenger roles with history, running metrics."""

from ..stats import Moments, SufficientStats
from ..validation import InvalidValueError
from ._registry import ModelRegistry, ModelVersion, RegistryConflictError, Role, RoleChange, UnknownVersionError

__all__ = [
    "InvalidValueError",
    "ModelRegistry",
    "ModelVersion",
    "Moments",
    "RegistryConflictError",
    "Role",
    "RoleChange",
    "SufficientStats",
    "UnknownVersionError",
]
