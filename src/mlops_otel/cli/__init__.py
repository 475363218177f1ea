"""The ``mlops-otel`` command line: A/B tests, the model registry and drift checks.

Runs on a state store (``--store URL``) or through a running service's
management API (``--api URL``); ``mlops-otel --help`` lists the commands.
"""

from ._main import main

__all__ = ["main"]
