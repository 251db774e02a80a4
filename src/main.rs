//! The `akashi` binary: `akashi [serve]` runs the server until Ctrl-C or SIGTERM (reopening
//! its store after a storage failure, see `akashi::supervisor`), `akashi token` prints a bearer
//! token, `akashi fsck` checks a stopped server's data dir.

use std::{
    io::IsTerminal as _,
    net::{SocketAddr, TcpListener},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::{
    EnvFilter, Layer, Registry, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use akashi::{
    cli::{Cli, Command, StoreCommand},
    config,
    config::Config,
    fsck, keys, supervisor,
    telemetry::Traces,
};

/// jemalloc rather than glibc's malloc: the writer thread frees what the tokio workers
/// allocate (prepared decisions, requests), and glibc spent almost a third of the writer's time
/// in `_int_malloc`/`malloc_consolidate` on that pattern. Measured +12-23% Authorize throughput
/// at 4x16 for +30% RSS (BENCHMARKS.md, “A paged patient listing”). Only the binary sets it;
/// the libraries and their tests use the system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::Fsck(args)) = &cli.command {
        return Ok(fsck::run(&args.data_dir, args.store.as_deref()));
    }
    if let Some(Command::Store(StoreCommand::Copy(args))) = &cli.command {
        let Some(keys) = args.keys_dir() else {
            anyhow::bail!(
                "both stores are databases: name the data dir with the log's keys (--keys)"
            );
        };
        return Ok(akashi::store_copy::run(&args.from, &args.to, &keys));
    }
    if let Some(Command::Token(args)) = &cli.command {
        let token = keys::mint_token(
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
    // Colour only for a person at a terminal; one JSON object per line for a log collector.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs: Box<dyn Layer<Registry> + Send + Sync> =
        match std::env::var("AKASHI_LOG_FORMAT").as_deref() {
            Ok("json") => logs.json().boxed(),
            Ok("text" | "") | Err(std::env::VarError::NotPresent) => logs.boxed(),
            Ok(_) | Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("`AKASHI_LOG_FORMAT` must be `text` or `json`")
            }
        };
    // Traces only when an OTLP endpoint is set (the OTEL_* variables).
    let traces = Traces::from_env()?;
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.as_ref().map(Traces::layer))
        .init();
    let served = serve(cli).await;
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    served
}

/// `akashi [serve]`, once logging is set up.
async fn serve(cli: Cli) -> anyhow::Result<ExitCode> {
    let args = cli.serve_args().cloned().unwrap_or_default();
    for name in config::unknown_env(std::env::vars()) {
        tracing::warn!(%name, "ignoring unknown environment variable");
    }
    let config = Config::load(args.config.as_deref(), std::env::vars(), &args.overrides())
        .context("while loading the configuration")?;
    let shutdown = shutdown_signal()?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .with_context(|| format!("while binding gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .with_context(|| format!("while binding HTTP on {}", config.http_addr))?;
    let admin = TcpListener::bind(config.admin_addr)
        .with_context(|| format!("while binding the admin address {}", config.admin_addr))?;
    let authzen = config
        .authzen_addr
        .map(|addr| {
            TcpListener::bind(addr)
                .with_context(|| format!("while binding the AuthZEN address {addr}"))
        })
        .transpose()?;
    let fhir = config
        .fhir_addr
        .map(|addr| {
            TcpListener::bind(addr)
                .with_context(|| format!("while binding the FHIR address {addr}"))
        })
        .transpose()?;
    let addrs = Addrs {
        grpc: grpc.local_addr()?,
        http: http.local_addr()?,
        admin: admin.local_addr()?,
        authzen: authzen.as_ref().map(TcpListener::local_addr).transpose()?,
        fhir: fhir.as_ref().map(TcpListener::local_addr).transpose()?,
    };
    let mut first = true;
    let banner = |server: &akashi::server::Server| {
        if std::mem::take(&mut first) {
            print_banner(&config, &addrs, &server.keys().verifier_key());
        }
    };
    let optional = supervisor::OptionalApis { authzen, fhir };
    supervisor::serve(
        config.clone(),
        grpc,
        http,
        admin,
        optional,
        shutdown,
        banner,
    )
    .await
    .context("while serving")?;
    Ok(ExitCode::SUCCESS)
}

/// The addresses actually bound.
struct Addrs {
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    authzen: Option<SocketAddr>,
    fhir: Option<SocketAddr>,
}

/// What the operator needs on start: where everything is and the checkpoint verifier key.
fn print_banner(config: &Config, addrs: &Addrs, vkey: &str) {
    println!("akashi {}", env!("CARGO_PKG_VERSION"));
    println!("  gRPC         {}", addrs.grpc);
    println!("  public HTTP  http://{}", addrs.http);
    println!(
        "  admin        http://{} (metrics, healthz, readyz)",
        addrs.admin
    );
    if let Some(authzen) = addrs.authzen {
        println!("  AuthZEN      http://{authzen}/access/v1/evaluation");
    }
    if let Some(fhir) = addrs.fhir {
        println!("  FHIR         http://{fhir}/fhir/Consent");
    }
    println!("  data dir     {}", config.data_dir.display());
    println!("  origin       {}", config.origin);
    println!("  vkey         {vkey}");
    println!(
        "  token        akashi token --data-dir {} --role platform",
        config.data_dir.display()
    );
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
