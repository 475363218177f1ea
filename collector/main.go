// Command otelcol is the small OpenTelemetry Collector distribution that the
// mlops-otel end-to-end tests run: OTLP in, batch, Prometheus exporter,
// Prometheus remote write, and traces forwarded over OTLP/HTTP (or printed by
// the debug exporter). Go is used only to
// build this binary for the tests; the project itself is a Python SDK.
package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/otelcol"
)

// version follows the core collector release the distribution pins.
const version = "0.165.0-mlops"

func settings() otelcol.CollectorSettings {
	return otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol",
			Description: "mlops-otel test Collector (OTLP -> Prometheus exporter / remote write, OTLP/HTTP traces)",
			Version:     version,
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				// file: is the default scheme so `--config path.yaml` works;
				// env: resolves the ${env:VAR} ports the shipped configs use.
				DefaultScheme: "file",
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
			},
		},
	}
}

func main() {
	if err := otelcol.NewCommand(settings()).Execute(); err != nil {
		log.Fatalf("otelcol: %v", err)
	}
}
