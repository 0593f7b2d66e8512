//! Helpers shared by the integration tests: a real analytics service on 127.0.0.1:0 and
//! known frames.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use siphon_analytics::{Handle, Options, StreamRecord};
use siphon_fork::{CallMeta, Fork, ForkConfig, ForkState, Instant, Mode, ServiceCommand};

/// How long a test waits for something that should happen at once: only a guard against
/// hanging, generous for a loaded machine; waits end as soon as the condition holds.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn service() -> Handle {
    siphon_analytics::bind("127.0.0.1:0", quiet())
        .await
        .expect("bind analytics")
}

pub fn quiet() -> Options {
    Options {
        log_levels: false,
        ..Options::default()
    }
}

pub fn meta() -> CallMeta {
    CallMeta {
        call_id: "a84b4c76e66710@pc33.example.com".into(),
        from: "sip:1001@example.com".into(),
        to: "sip:700@example.com".into(),
        codec: "PCMU".into(),
        account_sid: Some("AC0001".into()),
    }
}

/// A configuration that reconnects fast, for tests.
pub fn config(url: String, mode: Mode) -> ForkConfig {
    let mut c = ForkConfig::new(url, mode);
    c.reconnect_min = Duration::from_millis(30);
    c.reconnect_max = Duration::from_millis(150);
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// Frame `i` of `len` bytes: distinct content per frame.
pub fn frame(i: usize, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| (i.wrapping_mul(31) + j.wrapping_mul(7)) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Pushes frames `range` of `len` bytes, yielding between them as a 20 ms clock would.
pub async fn push(fork: &mut Fork, range: std::ops::Range<usize>, len: usize) {
    for i in range {
        fork.send_audio(frame(i, len), Instant::now());
        tokio::task::yield_now().await;
    }
}

pub async fn wait_state(fork: &Fork, want: ForkState) {
    let deadline = Instant::now() + WAIT;
    while fork.state() != want {
        assert!(
            Instant::now() < deadline,
            "fork stayed {:?}, wanted {want:?}",
            fork.state()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait(
    svc: &Handle,
    id: &str,
    what: &str,
    pred: impl Fn(&StreamRecord) -> bool,
) -> StreamRecord {
    match svc.wait_stream(id, WAIT, pred).await {
        Some(r) => r,
        None => panic!(
            "timed out waiting for {what}; stream is {:#?}",
            svc.stream(id)
        ),
    }
}

pub async fn next_cmd(fork: &mut Fork) -> ServiceCommand {
    tokio::time::timeout(WAIT, fork.recv())
        .await
        .expect("timed out waiting for a service command")
        .expect("fork ended")
}
