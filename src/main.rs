//! The `akashi` binary: `akashi [serve]` runs the server until Ctrl-C or SIGTERM,
//! `akashi token` prints a bearer token, `akashi fsck` checks a stopped server's data dir.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use akashi::{
    Config, Server, auth,
    cli::{Cli, Command},
    config, fsck,
};

/// jemalloc rather than glibc's malloc: the writer thread frees what the tokio workers
/// allocate (prepared decisions, requests), and glibc spent almost a third of the writer's time
/// in `_int_malloc`/`malloc_consolidate` on that pattern. Measured +12-23% Authorize throughput
/// at 4x16 for +30% RSS (BENCHMARKS.md, session 4). Only the binary sets it; the libraries and
/// their tests use the system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::Fsck(args)) = &cli.command {
        return Ok(fsck::run(&args.data_dir));
    }
    if let Some(Command::Token(args)) = &cli.command {
        let token = auth::mint_token(
            &args.data_dir,
            args.role,
            args.patient.as_deref(),
            args.ttl(),
        )
        .context("while minting a token")?;
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    let filter = EnvFilter::try_from_env("AKASHI_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let args = cli.serve_args().cloned().unwrap_or_default();
    for name in config::unknown_env(std::env::vars()) {
        tracing::warn!(%name, "ignoring unknown environment variable");
    }
    let config = Config::load(args.config.as_deref(), std::env::vars(), &args.overrides())
        .context("while loading the configuration")?;
    let shutdown = shutdown_signal()?;
    let server = Server::open(config.clone()).context("while opening the server")?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("while binding gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("while binding HTTP on {}", config.http_addr))?;
    println!("akashi {}", env!("CARGO_PKG_VERSION"));
    println!("  gRPC         {}", grpc.local_addr()?);
    println!("  public HTTP  http://{}", http.local_addr()?);
    println!("  data dir     {}", config.data_dir.display());
    println!("  origin       {}", config.origin);
    println!("  vkey         {}", server.keys().verifier_key());
    println!(
        "  token        akashi token --data-dir {} --role platform",
        config.data_dir.display()
    );
    server.run(grpc, http, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, so a
/// signal that arrives before the future is first polled is not lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("while installing SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("while installing SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
