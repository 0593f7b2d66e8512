//! `siphon-analytics`: run the reference analytics service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use siphon_analytics::{Mode, Options};

/// Reference analytics service for Siphon's media fork (native, Twilio Media Streams and
/// mod_audio_fork/jambonz protocols; choose with the URL path /native, /twilio, /audio-fork).
#[derive(Debug, Parser)]
#[command(name = "siphon-analytics", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Write one WAV file per stream (per track for Twilio) into this directory.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Send the caller's audio back.
    #[arg(long)]
    echo: bool,
    /// Play a tone (and send a mark) for each DTMF digit.
    #[arg(long)]
    tone_on_dtmf: bool,
    /// With --echo, send a mark after every N echoed frames.
    #[arg(long, value_name = "N")]
    mark_every: Option<u32>,
    /// Protocol for connections whose path says nothing: native, twilio or audio-fork.
    #[arg(long, value_parser = parse_mode)]
    mode: Option<Mode>,
    /// Hand each native stream's call to this target (`user:1003`, `trunk:p/+1555...`,
    /// `sip:agent@192.0.2.5:5070`) with the native `transfer` command, after
    /// --transfer-after-frames of the caller's audio: a voicebot handing off to a human.
    #[arg(long, value_name = "TARGET")]
    transfer_to: Option<String>,
    /// With --transfer-to: how many 20 ms frames of the caller to hear first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    transfer_after_frames: u64,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_bytes: usize,
    /// Log filter (RUST_LOG works too).
    #[arg(long, default_value = "info")]
    log: String,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::parse(s).ok_or_else(|| format!("unknown mode {s:?} (native, twilio, audio-fork)"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if let Some(dir) = &cli.out_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("siphon-analytics: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let opts = Options {
        out_dir: cli.out_dir,
        echo: cli.echo,
        tone_on_dtmf: cli.tone_on_dtmf,
        mark_every: cli.mark_every,
        default_mode: cli.mode,
        max_message_bytes: cli.max_message_bytes,
        log_levels: true,
        record_audio: false,
        // A long-running service: recent streams only, not every one it ever served.
        keep_ended_streams: Some(256),
        keep_ended_for: Some(std::time::Duration::from_secs(600)),
        transfer_after: cli.transfer_to.map(|to| (cli.transfer_after_frames, to)),
    };
    let handle = match siphon_analytics::bind(&cli.listen, opts).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("siphon-analytics: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %handle.local_addr(),
        "listening: ws://{0}/native, ws://{0}/twilio, ws://{0}/audio-fork",
        handle.local_addr()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("siphon-analytics: {e}");
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}
