//! The auditor against real logs: built through the ledger API from real policy events, served
//! by small in-process gRPC and tlog-tiles servers on loopback, checked by the library and by
//! the `akashi-audit` binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub,
    reason = "test code"
)]

mod cli;
mod history;
mod replay;
mod support;
mod watch;
mod witness;
