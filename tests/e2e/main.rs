//! End-to-end tests of the akashi server: the real server in-process on 127.0.0.1:0 with a
//! temporary data dir, reached through generated tonic clients and plain HTTP; plus the built
//! binary for the command line. One test binary, one module per area.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub,
    reason = "test code"
)]

mod api;
mod audit;
mod authzen;
mod bad_input;
mod binary;
mod cohort;
mod completeness;
mod consent_changes;
mod data_dir;
mod directory;
mod disclosure;
mod edge;
mod erasure;
mod fhir;
mod flows;
mod ha;
mod harness;
mod idempotency;
mod integrity;
mod load;
mod mtls;
mod oidc;
mod policy_limits;
mod policy_review;
mod postgres;
mod protocol;
mod provision;
mod public_http;
mod restart;
mod roles;
mod rules;
mod scaffold;
mod store_failure;
mod telemetry;
mod tokens;
mod unacknowledged;
mod witness;
