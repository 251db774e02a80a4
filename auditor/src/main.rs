//! `akashi-audit`: verify akashi's transparency log without trusting its operator.
//!
//! Exit codes: 0 valid, 2 invalid (a check failed: bad proof, fork, wrong decision), 1 error.
//! Everything is in the `auditor` library (`auditor::cli`); this file only parses arguments.

use auditor::cli::{Cli, run};
use auditor::exit::AuditExitCode;
use clap::Parser as _;

fn main() -> AuditExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with exit code 1.
            let _ = error.print();
            return if error.use_stderr() {
                AuditExitCode::Error
            } else {
                AuditExitCode::Valid
            };
        }
    };
    // Logs (the witness server's) go to stderr; `AKASHI_LOG` filters them (default `info`).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AKASHI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    run(cli, &mut std::io::stdout(), &mut std::io::stderr())
}
