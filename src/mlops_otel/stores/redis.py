"""The Redis store as a public submodule: ``from mlops_otel.stores.redis import RedisStore``.

Needs the ``redis`` extra (``pip install 'mlops-otel[redis]'``).
"""

from ._redis import RedisStore

__all__ = ["RedisStore"]
