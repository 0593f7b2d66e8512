//! wss:// end to end: a TLS WebSocket server with a certificate from a private CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use siphon_fork::{ForkState, Mode, ServiceCommand, start};
use tokio::net::TcpListener;

#[tokio::test]
async fn wss_with_a_private_ca_streams_and_without_it_fails() {
    let pki = siphon_testkit::private_ca();
    let dir = std::env::temp_dir().join(format!("siphon-fork-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = pki.acceptor.clone();
    let server = tokio::spawn(async move {
        let mut firsts = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(sock).await else {
                continue; // the client that does not trust us
            };
            let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
            let first = ws.next().await.unwrap().unwrap();
            firsts.push(first.into_text().unwrap().to_string());
            // Wait for the fork to close.
            while let Some(Ok(_)) = ws.next().await {}
            return firsts;
        }
        firsts
    });

    // Not trusted with the bundled webpki roots: a required fork fails.
    let mut cfg = config(format!("wss://localhost:{port}/native"), Mode::Native);
    cfg.required = true;
    cfg.connect_timeout = Duration::from_millis(500);
    let mut untrusting = start(cfg, meta());
    match next_cmd(&mut untrusting).await {
        ServiceCommand::Failed(reason) => assert!(reason.contains("could not connect"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }

    // Trusted with the CA file.
    let mut cfg = config(format!("wss://localhost:{port}/native"), Mode::Native);
    cfg.tls_ca_file = Some(ca_file.clone());
    let fork = start(cfg, meta());
    wait_state(&fork, ForkState::Connected).await;
    let id = fork.stream_id().to_string();
    fork.stop("hangup").wait().await;
    let firsts = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(firsts.len(), 1);
    let start: serde_json::Value = serde_json::from_str(&firsts[0]).unwrap();
    assert_eq!(start["event"], "start");
    assert_eq!(start["streamId"], id);
    std::fs::remove_dir_all(&dir).unwrap();
}
