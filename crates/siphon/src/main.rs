//! `siphon`: the softswitch binary. Thin: parse arguments, load configuration, set up
//! logging and signals, run the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use siphon_server::{Config, Server};
use tracing_subscriber::EnvFilter;

/// Siphon: a SIP/RTP softswitch that forks call audio to WebSocket analytics services.
///
/// With no arguments it runs the embedded default configuration (configs/siphon.toml):
/// SIP on 127.0.0.1:5060 (UDP and TCP), demo accounts 1001/1002, test numbers 600
/// (echo), 601 (tone), 610 (rings), 700 (fork); metrics and the admin API on
/// http://127.0.0.1:8080 (GET /metrics, /healthz, /readyz, /api/calls, /api/registrations).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without it the embedded default is used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// SIP listen address, overriding the configuration (e.g. 0.0.0.0:5060).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP (metrics, admin) listen address, overriding the configuration.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Address written in SDP for RTP, overriding `[rtp] advertised_address` (containers,
    /// NAT).
    #[arg(long, env = "SIPHON_ADVERTISED_ADDRESS")]
    advertise: Option<std::net::IpAddr>,
    /// Bearer token for the admin API, overriding `[http] token` (keeps it out of files).
    #[arg(long, env = "SIPHON_HTTP_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
    /// Log filter, e.g. `info`, `debug`, `siphon_server=debug` (RUST_LOG works too).
    #[arg(long, default_value = "info")]
    log: String,
    /// Log format: `human` (default) or `json` (one object per line, with the call's span
    /// fields, for log shippers).
    #[arg(long, env = "SIPHON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration file and print any error with its line number.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::CheckConfig { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Some(Cmd::DefaultConfig) => {
            print!("{}", siphon_server::config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        None => run(cli),
    }
}

fn run(cli: Cli) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    // Colours only on a terminal: log files and pipes get plain text that grep can match.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match cli.log_format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
    }
    let loaded = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::embedded(),
    };
    let mut config = match loaded {
        Ok(c) => c,
        Err(e) => {
            let name = cli
                .config
                .as_ref()
                .map_or("embedded configuration".to_string(), |p| {
                    p.display().to_string()
                });
            eprintln!("siphon: refusing to start: {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(listen) = cli.listen {
        config.sip.listen = listen;
    }
    if let Some(http) = cli.http {
        config.http.listen = http;
    }
    if let Some(ip) = cli.advertise {
        config.rtp.advertised_address = Some(ip);
    }
    if let Some(token) = cli.http_token {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            eprintln!(
                "siphon: refusing to start: the HTTP token must be printable ASCII without spaces"
            );
            return ExitCode::FAILURE;
        }
        config.http.token = Some(token);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("siphon: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("siphon: cannot listen on {e}");
                return ExitCode::FAILURE;
            }
        };
        // The first signal starts the drain; a second one ends the calls left at once.
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = first_tx.send(());
            shutdown_signal().await;
            let _ = second_tx.send(());
        });
        let first = async {
            let _ = first_rx.await;
        };
        let second = async {
            if second_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        server.run_until(first, second).await;
        ExitCode::SUCCESS
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
