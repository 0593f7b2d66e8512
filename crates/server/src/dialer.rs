//! Connections Siphon opens itself: to trunks over TCP or TLS (RFC 3261 §18.1.1: a client
//! that has no connection to the next hop opens one). `transport::Outbound` queues the
//! first message on a new connection's writer and hands the request here; this task
//! connects (TLS: the certificate checked against the trunk's CA file or the system's
//! roots, SNI and name check against the trunk's host), then serves the connection like
//! an accepted one, with keepalives and no idle timeout. A connection that cannot be
//! opened is a transport error, which a client treats as a 503 (RFC 3261 §8.1.3.1): each
//! request that waited on it is answered 503 to the SIP core, so a trunk call fails over
//! to the trunk's next address at once instead of after Timer B.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use siphon_sip::{Peer, Transport, message};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::counters::inc;
use crate::transport::{Connection, Dial, DialRequest, TransportContext, deliver};

/// The rustls client setup for a trunk: its CA file's certificates, or the system's roots.
/// Errors name the file.
pub fn tls_client(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in the file", path.display()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system store with one odd certificate still serves the rest.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system root certificates".to_string());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens each requested connection in a task of its own, until shutdown.
pub async fn run(
    mut requests: mpsc::Receiver<DialRequest>,
    ctx: TransportContext,
    mut shutdown: broadcast::Receiver<()>,
) {
    loop {
        let request = tokio::select! {
            Some(r) = requests.recv() => r,
            _ = shutdown.recv() => return,
            else => return,
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.resubscribe();
        tokio::spawn(open(request, ctx, shutdown));
    }
}

async fn open(request: DialRequest, ctx: TransportContext, shutdown: broadcast::Receiver<()>) {
    let DialRequest { peer, dial, tx, rx } = request;
    let conn = Connection {
        ctx: ctx.clone(),
        peer: peer.addr,
        transport: peer.transport,
        outbound: true,
    };
    // Connecting and the TLS handshake share one deadline.
    let connect = async {
        let tcp = TcpStream::connect(peer.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, String>(tcp)
    };
    let timeout = ctx.tls_handshake_timeout;
    match (peer.transport, dial.tls) {
        (Transport::Tls, Some((name, config))) => {
            let handshake = async {
                let tcp = connect.await?;
                TlsConnector::from(config)
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(stream)) => {
                    info!(peer = %peer.addr, server = ?name, "TLS connection to trunk open");
                    conn.serve(stream, tx, rx, shutdown).await;
                }
                Ok(Err(e)) => failed(&ctx, peer, &tx, rx, &e),
                Err(_) => failed(&ctx, peer, &tx, rx, "timed out"),
            }
        }
        (Transport::Tcp, _) => match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => {
                info!(peer = %peer.addr, "TCP connection to trunk open");
                conn.serve(stream, tx, rx, shutdown).await;
            }
            Ok(Err(e)) => failed(&ctx, peer, &tx, rx, &e),
            Err(_) => failed(&ctx, peer, &tx, rx, "timed out"),
        },
        _ => failed(&ctx, peer, &tx, rx, "no TLS setup for this peer"),
    }
}

/// The connection could not be opened: every request waiting on it gets a 503 "from" the
/// peer (RFC 3261 §8.1.3.1), so its transaction ends now.
fn failed(
    ctx: &TransportContext,
    peer: Peer,
    tx: &mpsc::Sender<Vec<u8>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    error: &str,
) {
    warn!(peer = %peer.addr, transport = %peer.transport, %error, "cannot connect to trunk");
    inc(&ctx.counters.tcp_connect_failures);
    ctx.out.forget_connection(peer.addr, tx);
    rx.close();
    while let Ok(bytes) = rx.try_recv() {
        let Ok(rsip::SipMessage::Request(request)) = rsip::SipMessage::try_from(bytes.as_slice())
        else {
            continue;
        };
        // An ACK has no response; a CANCEL's INVITE gets its own 503.
        if request.method == rsip::Method::Ack {
            continue;
        }
        let mut response = message::response_to(&request, 503, Some("Transport Error"), None);
        message::finish(&mut response.headers, b"");
        debug!(peer = %peer.addr, method = %request.method, "answering 503 for the unreachable peer");
        deliver(
            Ok(rsip::SipMessage::Response(response)),
            peer.addr,
            peer.transport,
            &ctx.core,
            &ctx.out,
            &ctx.counters,
        );
    }
}

/// A trunk's `Dial`: TLS with its host as the name to check, or plain TCP.
pub fn dial_for(
    transport: Transport,
    host: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Option<Dial> {
    match transport {
        Transport::Udp => None,
        Transport::Tcp => Some(Dial { tls: None }),
        Transport::Tls => {
            let name = ServerName::try_from(host.to_string()).ok()?;
            Some(Dial {
                tls: Some((name, tls?.clone())),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ca_file_problems_name_the_file() {
        let dir = std::env::temp_dir().join(format!("siphon-dialer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let missing = tls_client(Some(&ca)).err().unwrap();
        assert!(missing.contains("ca.pem"), "{missing}");
        std::fs::write(&ca, "nothing here").unwrap();
        let empty = tls_client(Some(&ca)).err().unwrap();
        assert!(empty.contains("no certificate"), "{empty}");
        std::fs::write(&ca, siphon_testkit::private_ca().ca_pem).unwrap();
        let config = tls_client(Some(&ca)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // UDP is never dialled; TCP plainly; TLS checks the trunk's host name.
        assert!(dial_for(Transport::Udp, "carrier.test", Some(&config)).is_none());
        assert!(
            dial_for(Transport::Tcp, "carrier.test", None)
                .unwrap()
                .tls
                .is_none()
        );
        let tls = dial_for(Transport::Tls, "carrier.test", Some(&config)).unwrap();
        assert!(
            tls.tls
                .is_some_and(|(name, _)| name.to_str() == "carrier.test")
        );
        assert!(dial_for(Transport::Tls, "carrier.test", None).is_none());
    }
}
