//! akashi: a consent ledger and data-access governance service for personal health records.
//!
//! This crate is the server: the only one that knows gRPC. It joins `proto` (the contract),
//! `policy` (Cedar decisions) and `ledger` (the append-only log).
//!
//! # Layout
//!
//! - `config`: the serde [`Config`](config::Config) with its layers (file < `AKASHI_*` env <
//!   flags).
//! - `cli`: the clap command line of the `akashi` binary.
//! - `keys`: data-dir key material (checkpoint signing key, token issuer, subject pseudonyms).
//! - `auth`: bearer tokens, roles, the authentication layer.
//! - `oidc`: tokens from an OpenID Connect provider, verified with its published keys.
//! - `authzen`: the OpenID AuthZEN 1.0 API (JSON over HTTP), answered through `Authorize`.
//! - `fhir`: HL7 FHIR R4 `Consent` in and out (a FHIR REST endpoint over the consent service).
//! - `metrics`: the Prometheus registry and the call-recording layer.
//! - `idempotency`: request ids that make a retried write return its first answer.
//! - `error`: the crate [`Error`](error::Error) and its single mapping to `tonic::Status`.
//! - `server`: [`Server`](server::Server), which hosts health, reflection, the services and the
//!   public HTTP port.
//! - `state_machine`: how each command becomes a log entry, in sequence order.
//! - `policy_review`: analyses of candidate policy sets over the logged decisions, and the
//!   two-person rule's memory of them.
//! - `service`: the `akashi.v1` gRPC services (edge parsing, roles, submit or read).
//! - `public`: the public HTTP read path (C2SP tlog-tiles, the verifier key, the disclosure
//!   page and its data).
//! - `disclosure`: the public disclosure statistics kept up to date with the log, and the page
//!   that shows them.
//! - `telemetry`: OpenTelemetry traces over OTLP/HTTP (a span per request and per batch).
//! - `tls_client`: TLS for outbound calls (the OpenID Connect key set, `https://` witnesses).
//! - `supervisor`: serves through a store failure, reopening the store once it takes writes.
//! - `witness`: asks the configured witnesses to cosign checkpoints (c2sp.org/tlog-witness) in
//!   the background, and keeps the newest witnessed checkpoint.

pub mod auth;
pub mod authzen;
pub mod cli;
pub mod config;
pub mod disclosure;
pub mod erasure;
pub mod error;
pub mod fhir;
pub mod follower;
pub mod fsck;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod oidc;
pub mod policy_review;
pub mod public;
pub mod server;
pub mod service;
pub mod state_machine;
pub mod store_copy;
pub mod subject_map;
pub mod supervisor;
pub mod telemetry;
pub mod tls_client;
pub mod witness;
