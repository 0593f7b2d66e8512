//! `siphon`: the softswitch binary. Thin: parse arguments, load configuration, set up
//! logging and signals, run the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use siphon_server::{Config, Server};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines held while stdout is slower than Siphon logs (a full pipe, a stalled log
/// shipper). Past it new lines are dropped and counted (`siphon_log_lines_dropped_total`)
/// rather than blocking the task that logs: a tokio worker stuck in `write(2)` would stall
/// every call it runs, signalling included. 16 Ki lines of SIP trace are a few tens of MB.
const LOG_BUFFER_LINES: usize = 16 * 1024;
/// How long a clean stop waits for the log writer to flush what it holds.
const LOG_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

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
            Ok(mut config) => {
                // The overrides the server would apply ($SIPHON_HTTP_TOKEN above all), so
                // that a file the server would refuse is not reported OK.
                if let Some(http) = cli.http {
                    config.http.listen = http;
                }
                if cli.http_token.is_some() {
                    config.http.token = cli.http_token;
                }
                if let Err(e) = check_http_exposure(&config) {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
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

/// The HTTP listener reaches beyond this host, and nothing guards the admin API on it:
/// refused, rather than an API that answers whatever a proxy or a port forward relays.
/// (The HTTP layer refuses such requests too; this says so before anything starts.)
fn check_http_exposure(config: &Config) -> Result<(), String> {
    let listen = config.http.listen;
    if config.http.token.is_none() && !listen.ip().to_canonical().is_loopback() {
        return Err(format!(
            "[http] listen = \"{listen}\" is not a loopback address and no admin token is \
             configured: set [http] token (or --http-token / $SIPHON_HTTP_TOKEN), or listen on \
             127.0.0.1"
        ));
    }
    Ok(())
}

/// The log writer: lossy, bounded, on a thread of its own (see [`LOG_BUFFER_LINES`]).
fn log_writer<W: std::io::Write + Send + 'static>(
    out: W,
    lines: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines)
        .thread_name("siphon-log")
        .finish(out)
}

/// Flushes the log writer on a clean stop, waiting at most [`LOG_FLUSH_WAIT`]: the guard's
/// drop hands the writer what is left and waits for it, and an output that is stalled
/// for good must not keep the process from exiting.
fn flush_logs(guard: WorkerGuard) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("siphon-log-flush".into())
        .spawn(move || {
            drop(guard);
            let _ = done_tx.send(());
        });
    if spawned.is_ok() {
        let _ = done_rx.recv_timeout(LOG_FLUSH_WAIT);
    }
}

fn run(cli: Cli) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    // Colours only on a terminal: log files and pipes get plain text that grep can match.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, log_guard) = log_writer(std::io::stdout(), LOG_BUFFER_LINES);
    let dropped = writer.error_counter();
    {
        let dropped = dropped.clone();
        siphon_server::log_output::count_dropped_lines_with(move || dropped.dropped_lines() as u64);
    }
    match cli.log_format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(writer)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
    }
    let code = serve(cli);
    let lost = dropped.dropped_lines();
    if lost > 0 {
        // Through the writer like every line: it goes out last, after what was queued.
        tracing::warn!(
            dropped_lines = lost,
            "log lines were dropped because the log output did not keep up"
        );
    }
    flush_logs(log_guard);
    code
}

/// Loads the configuration, applies the command line and runs the server to the end.
fn serve(cli: Cli) -> ExitCode {
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
    if let Err(e) = check_http_exposure(&config) {
        eprintln!("siphon: refusing to start: {e}");
        return ExitCode::FAILURE;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write as _;
    use std::sync::{Arc, Condvar, Mutex};

    fn config(listen: &str, token: Option<&str>) -> Config {
        let mut c = Config::embedded().unwrap();
        c.http.listen = listen.parse().unwrap();
        c.http.token = token.map(String::from);
        c
    }

    #[test]
    fn an_http_listener_off_loopback_needs_a_token() {
        for listen in [
            "127.0.0.1:8080",
            "127.0.0.53:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(
                check_http_exposure(&config(listen, None)).is_ok(),
                "{listen}"
            );
        }
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.0.2.1:8080",
            "[::ffff:192.0.2.1]:80",
        ] {
            let e = check_http_exposure(&config(listen, None)).unwrap_err();
            assert!(e.contains("token") && e.contains(listen), "{e}");
            assert!(check_http_exposure(&config(listen, Some("t0ken"))).is_ok());
        }
    }

    /// An output that takes nothing until it is opened: a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Stalled(Arc<(Mutex<bool>, Condvar)>);

    impl Stalled {
        fn open(&self) {
            *self.0.0.lock().unwrap() = true;
            self.0.1.notify_all();
        }
    }

    impl std::io::Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let out = Stalled::default();
        let (mut writer, guard) = log_writer(out.clone(), 4);
        // Were the writer blocking, the first write would never return. At most 4 lines
        // wait in the buffer and one in the writer's hands: the rest are dropped.
        for n in 0..100 {
            writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        let dropped = writer.error_counter().dropped_lines();
        assert!((95..=100).contains(&dropped), "{dropped}");
        out.open();
        flush_logs(guard);
    }
}
