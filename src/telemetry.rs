//! OpenTelemetry traces over OTLP/HTTP: on when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, off otherwise, with no cost then beyond a
//! disabled callsite per call.
//!
//! Two kinds of span are exported: one per gRPC request (`akashi.v1.AccessService/Authorize`,
//! made by the metrics layer on [`TRACE_TARGET`] at TRACE level, with `rpc.method` and
//! `rpc.grpc.status_code`), and one per batch the sequencer commits (`sequencer.batch`, the
//! ledger's span, with the number of commands; the sequencer's own log lines of that batch,
//! which name no patient, ride along as its span events). No request field leaves the process
//! this way, so no patient id does. Spans are batched and sent as protobuf
//! (`http/protobuf`) by the SDK's batch processor on its own thread, honouring the standard
//! `OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`); the endpoint must be `http://` (a collector
//! beside the server, which forwards over TLS). [`Traces::shutdown`] sends what is left.
//!
//! This module does not set up logging (the binary does) and creates no span itself.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::{Level, Subscriber};
use tracing_subscriber::{Layer, filter::Targets, registry::LookupSpan};

/// The `tracing` target of the per-request spans.
pub const TRACE_TARGET: &str = "akashi::trace";
/// The target of the sequencer's per-batch spans.
pub const BATCH_TARGET: &str = "ledger::sequencer";
/// The variables that turn traces on.
pub const ENDPOINT_VARS: [&str; 2] = [
    // The traces endpoint first: the exporter prefers it too.
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry: {0}")]
pub struct TelemetryError(String);

/// The trace pipeline: a tracer provider exporting over OTLP/HTTP.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The pipeline the environment asks for: none unless an OTLP endpoint variable is set
    /// (and not empty).
    ///
    /// # Errors
    ///
    /// [`TelemetryError`] when the exporter cannot be built (an endpoint that is not a URL, a
    /// protocol other than `http/protobuf`).
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let endpoint = ENDPOINT_VARS
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        if !endpoint.trim().starts_with("http://") {
            return Err(TelemetryError(format!(
                "the OTLP endpoint `{endpoint}` must be http:// (send to a collector beside the \
                 server)"
            )));
        }
        if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && !protocol.is_empty()
            && protocol != "http/protobuf"
        {
            return Err(TelemetryError(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL `{protocol}` is not supported (only http/protobuf)"
            )));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").map_or(true, |name| name.is_empty()) {
            resource = resource.with_service_name("akashi");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Some(Self { provider }))
    }

    /// The `tracing` layer that turns the request and batch spans into OpenTelemetry spans (and
    /// nothing else).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("akashi");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                Targets::new()
                    .with_target(TRACE_TARGET, Level::TRACE)
                    .with_target(BATCH_TARGET, Level::INFO),
            )
    }

    /// Sends the spans not yet sent and stops the exporter. Blocking.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(cause = %err, "the last traces were not all sent");
        }
    }
}
