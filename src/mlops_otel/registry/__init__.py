"""Model registry: versions, champion/challenger roles with history, running metrics."""

from ._registry import ModelRegistry, ModelVersion, RegistryConflictError, Role, RoleChange, UnknownVersionError
from ._stats import Moments, SufficientStats
from ._validate import InvalidValueError

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
