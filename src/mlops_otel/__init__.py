"""mlops-otel: OpenTelemetry-native model registry, A/B testing, drift detection and telemetry."""
