"""Example services built on mlops-otel."""
