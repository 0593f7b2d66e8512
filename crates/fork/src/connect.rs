//! Opening one WebSocket connection: the upgrade request (headers, subprotocol), TLS with
//! rustls (ring provider; bundled webpki roots or the system's), limits, and a timeout.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::config::{ForkConfig, TlsRoots};

/// The WebSocket read buffer of one fork connection, bytes (see [`connect`]).
const FORK_READ_BUFFER: usize = 4096;

/// The connected socket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one attempt needs, cloned out of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub subprotocol: Option<&'static str>,
    pub tls_roots: TlsRoots,
    pub tls_ca_file: Option<PathBuf>,
    pub max_message_bytes: usize,
}

impl Target {
    pub(crate) fn new(config: &ForkConfig, subprotocol: Option<&'static str>) -> Self {
        Target {
            url: config.url.clone(),
            headers: config.headers.clone(),
            subprotocol,
            tls_roots: config.tls_roots,
            tls_ca_file: config.tls_ca_file.clone(),
            max_message_bytes: config.max_message_bytes,
        }
    }
}

/// One connection attempt, bounded by `timeout` (TCP, TLS and the HTTP upgrade together).
pub(crate) async fn connect(target: Target, timeout: Duration) -> Result<Ws, String> {
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad url: {e}"))?;
    for (name, value) in &target.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("bad header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
        request.headers_mut().append(name, value);
    }
    if let Some(p) = target.subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    let connector = if target.url.starts_with("wss://") {
        match &target.tls_ca_file {
            None => Connector::Rustls(tls_config(target.tls_roots)?),
            Some(path) => {
                let pem = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Connector::Rustls(build_tls_config(target.tls_roots, Some(&pem))?)
            }
        }
    } else {
        Connector::Plain
    };
    // tungstenite's default read buffer is 128 KiB, and every read resizes (zero-fills) the
    // buffer up to its capacity: 128 KiB of RSS per fork and a memset per frame. A fork
    // receives small messages (playback frames, marks, JSON events); 4 KiB holds several,
    // and a larger message still grows the buffer to fit it.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(FORK_READ_BUFFER)
        .max_message_size(Some(target.max_message_bytes))
        .max_frame_size(Some(target.max_message_bytes))
        .max_write_buffer_size(8 << 20);
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

/// The rustls client configuration for a root store, built once per process.
fn tls_config(roots: TlsRoots) -> Result<Arc<rustls::ClientConfig>, String> {
    static WEBPKI: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    static NATIVE: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let cell = match roots {
        TlsRoots::Webpki => &WEBPKI,
        TlsRoots::Native => &NATIVE,
    };
    cell.get_or_init(|| build_tls_config(roots, None)).clone()
}

/// The system's root certificates, read once per process.
fn native_certs() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static CERTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    CERTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// A client configuration trusting `roots` and, if given, the certificates of a PEM file.
fn build_tls_config(
    roots: TlsRoots,
    extra_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut store = rustls::RootCertStore::empty();
    if let Some(pem) = extra_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("bad PEM certificate: {e}"))?;
            store
                .add(cert)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        if store.is_empty() {
            return Err("the CA file holds no certificate".to_string());
        }
    }
    match roots {
        TlsRoots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::Native => {
            let before = store.len();
            for cert in native_certs() {
                // One unparsable system certificate should not disable TLS.
                let _ = store.add(cert.clone());
            }
            if store.len() == before && extra_pem.is_none() {
                return Err("no usable native root certificates".to_string());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn webpki_tls_config_builds() {
        assert!(tls_config(TlsRoots::Webpki).is_ok());
    }

    #[tokio::test]
    async fn refused_and_bad_urls_are_errors_not_panics() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut t = Target {
            url: format!("ws://127.0.0.1:{port}/x"),
            headers: vec![("Authorization".into(), "Bearer t".into())],
            subprotocol: None,
            tls_roots: TlsRoots::Webpki,
            tls_ca_file: None,
            max_message_bytes: 1 << 20,
        };
        assert!(connect(t.clone(), Duration::from_secs(2)).await.is_err());
        t.url = "ws://".into();
        assert!(connect(t.clone(), Duration::from_secs(2)).await.is_err());
        t.url = format!("ws://127.0.0.1:{port}/");
        t.headers = vec![("bad name".into(), "v".into())];
        assert!(connect(t, Duration::from_secs(2)).await.is_err());
    }
}
