//! `siphon-load`: run one load level, the fork sink, or print the table of a run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use siphon_load::digest::Algorithm;
use siphon_load::generator::{self, Auth, Config};
use siphon_load::report::{self, LevelResult};
use siphon_load::{chart, clock, floor, procstat, sink};

/// Load and latency benchmark for Siphon (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "siphon-load", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Place CALLS calls at RATE per second, each held HOLD seconds, and print one JSON line.
    Run {
        /// Siphon's SIP address.
        #[arg(long, default_value = "127.0.0.1:5060")]
        server: SocketAddr,
        /// Local address for SIP and RTP.
        #[arg(long, default_value = "127.0.0.1")]
        local_ip: Ipv4Addr,
        /// Number to call (600 echo, 700 fork).
        #[arg(long, default_value = "600")]
        number: String,
        #[arg(long, default_value_t = 100)]
        calls: u32,
        /// Calls per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds each call sends audio.
        #[arg(long, default_value_t = 30.0)]
        hold: f64,
        /// Milliseconds of silence between the last packet and the BYE.
        #[arg(long, default_value_t = 300)]
        tail_ms: u64,
        /// Digest credentials USER:PASSWORD for numbers that challenge.
        #[arg(long)]
        auth: Option<String>,
        /// Prefer this digest algorithm (MD5 or SHA-256) when several are offered.
        #[arg(long)]
        algorithm: Option<String>,
        /// The sink's control URL (ws://HOST:PORT/control?reset).
        #[arg(long)]
        sink: Option<String>,
        /// NAME=PID of a process to measure (siphon, sink); repeatable.
        #[arg(long, value_parser = parse_watch)]
        watch: Vec<(String, u32)>,
        /// Label of this run in the table (echo, fork, ...).
        #[arg(long, default_value = "echo")]
        label: String,
        /// RTP socket buffers, bytes.
        #[arg(long, default_value_t = 32 << 20)]
        socket_buffer: usize,
        /// Seconds to wait after the last call before asking the sink.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// Siphon's RTP port range MIN-MAX, to read its sockets' receive drops.
        #[arg(long, value_parser = parse_range)]
        siphon_ports: Option<(u16, u16)>,
        /// Append the JSON line to this file too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Bridge mode: register as USER:PASSWORD and answer the calls placed to it (the
        /// callee leg of each call), sending RTP both ways; call a `user` route of USER.
        #[arg(long)]
        answer_as: Option<String>,
    },
    /// The fork sink: a native-protocol WebSocket service that timestamps every frame.
    Sink {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
        /// Send every inbound frame back (audio in both directions).
        #[arg(long)]
        echo: bool,
    },
    /// The floor: the least a program can do for one forked call (RTP in → WebSocket frame
    /// out, frame in → RTP out), answering the generator's calls like Siphon's fork number.
    Floor {
        #[arg(long, default_value = "127.0.0.1:5090")]
        listen: SocketAddr,
        /// The sink's fork URL.
        #[arg(long, default_value = "ws://127.0.0.1:9190/native")]
        sink: String,
        /// l16 or pcmu (what the sink receives).
        #[arg(long, default_value = "l16")]
        encoding: String,
        /// RTP ports MIN-MAX.
        #[arg(long, value_parser = parse_range, default_value = "10000-19998")]
        rtp_ports: (u16, u16),
    },
    /// Print the Markdown table (and headline) of JSON result lines; with --svg DIR also
    /// write the charts (CPU per call, latency p99, against concurrent calls) there.
    Report {
        files: Vec<PathBuf>,
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Wait until Siphon answers OPTIONS (exit 1 after SECONDS).
    Ping {
        #[arg(long, default_value = "127.0.0.1:5060")]
        server: SocketAddr,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Measure a process's CPU % and RSS over SECONDS (for runs driven by SIPp).
    Watch {
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        seconds: f64,
    },
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected MIN-MAX")?;
    Ok((
        a.parse().map_err(|e| format!("{e}"))?,
        b.parse().map_err(|e| format!("{e}"))?,
    ))
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    Ok((name.to_string(), pid.parse().map_err(|e| format!("{e}"))?))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("siphon-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Run {
            server,
            local_ip,
            number,
            calls,
            rate,
            hold,
            tail_ms,
            auth,
            algorithm,
            sink,
            watch,
            label,
            socket_buffer,
            settle,
            siphon_ports,
            out,
            answer_as,
        } => {
            let prefer = match algorithm.as_deref() {
                None => None,
                Some(a) if a.eq_ignore_ascii_case("md5") => Some(Algorithm::Md5),
                Some(a) if a.eq_ignore_ascii_case("sha-256") => Some(Algorithm::Sha256),
                Some(a) => anyhow::bail!("unknown algorithm {a}"),
            };
            let auth = match auth {
                None => None,
                Some(s) => {
                    let (user, password) = s
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("--auth wants USER:PASSWORD"))?;
                    Some(Auth {
                        user: user.into(),
                        password: password.into(),
                        prefer,
                    })
                }
            };
            let answer_as = match answer_as {
                None => None,
                Some(s) => {
                    let (user, password) = s
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("--answer-as wants USER:PASSWORD"))?;
                    Some(Auth {
                        user: user.into(),
                        password: password.into(),
                        prefer: None,
                    })
                }
            };
            let result = generator::run(Config {
                server,
                local_ip,
                number,
                calls,
                rate,
                hold: Duration::from_secs_f64(hold),
                tail: Duration::from_millis(tail_ms),
                auth,
                sink_control: sink,
                watch,
                label,
                socket_buffer,
                settle: Duration::from_secs_f64(settle),
                siphon_ports: siphon_ports.map(|(a, b)| a..=b),
                answer_as,
            })?;
            let line = serde_json::to_string(&result)?;
            println!("{line}");
            if let Some(path) = out {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                writeln!(f, "{line}")?;
            }
            eprint!("{}", report::table(std::slice::from_ref(&result)));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sink { listen, echo } => {
            sink::run(sink::Options { listen, echo })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Floor {
            listen,
            sink,
            encoding,
            rtp_ports,
        } => {
            let encoding = match encoding.as_str() {
                "l16" => floor::Encoding::L16,
                "pcmu" => floor::Encoding::Pcmu,
                e => anyhow::bail!("unknown encoding {e} (l16 or pcmu)"),
            };
            floor::run(floor::Options {
                listen,
                sink,
                encoding,
                rtp_ports,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { files, svg } => {
            let mut results: Vec<LevelResult> = Vec::new();
            for f in files {
                for line in std::fs::read_to_string(&f)?.lines() {
                    if !line.trim().is_empty() {
                        results.push(serde_json::from_str(line)?);
                    }
                }
            }
            print!("{}", report::table(&results));
            if let Some(dir) = svg {
                std::fs::create_dir_all(&dir)?;
                for (name, text) in chart::charts(&results) {
                    std::fs::write(dir.join(name), text)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ping { server, seconds } => {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            let local = sock.local_addr()?;
            let deadline = std::time::Instant::now() + Duration::from_secs_f64(seconds);
            let mut n = 0u32;
            while std::time::Instant::now() < deadline {
                n += 1;
                let msg = format!(
                    "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ping{n}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:ping@{local}>;tag=p{n}\r\nTo: <sip:{server}>\r\n\
                     Call-ID: ping-{n}@siphon-load\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = sock.send_to(msg.as_bytes(), server);
                let mut buf = [0u8; 4096];
                if let Ok((len, _)) = sock.recv_from(&mut buf)
                    && buf[..len].starts_with(b"SIP/2.0 200")
                {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            eprintln!("siphon-load: no answer to OPTIONS from {server}");
            Ok(ExitCode::FAILURE)
        }
        Cmd::Watch { pid, seconds } => {
            let a = procstat::sample(pid, clock::now_us())
                .ok_or_else(|| anyhow::anyhow!("no process {pid}"))?;
            std::thread::sleep(Duration::from_secs_f64(seconds));
            let b = procstat::sample(pid, clock::now_us())
                .ok_or_else(|| anyhow::anyhow!("process {pid} ended"))?;
            println!(
                "{{\"cpu_percent\":{:.1},\"rss_kb\":{}}}",
                procstat::cpu_percent(&a, &b).unwrap_or(0.0),
                b.rss_kb
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
