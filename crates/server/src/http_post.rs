//! One JSON POST to an application (status events, webhooks): hyper's HTTP/1 client
//! connection over a TCP (or TLS) socket of our own, so that the connect and whole-request
//! timeouts are ours and nothing is pooled across applications. Answers are read up to
//! [`MAX_ANSWER`] bytes: an application cannot make Siphon buffer without bound.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The most of an answer body read.
pub const MAX_ANSWER: usize = 64 * 1024;

/// An `http://` or `https://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, `/` at least.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("not an http(s) URL: {url}"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("bad IPv6 host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "bad port")?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "bad port")?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Target {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// What the application answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// POSTs `body` (JSON) to `url` with `headers`; `connect` bounds the TCP (and TLS)
/// connection, `total` the whole exchange.
pub async fn post_json(
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
    connect: Duration,
    total: Duration,
) -> Result<Answer, String> {
    let target = Target::parse(url)?;
    tokio::time::timeout(total, exchange(&target, headers, body, connect))
        .await
        .map_err(|_| format!("no answer within {total:?}"))?
}

async fn exchange(
    target: &Target,
    headers: &[(String, String)],
    body: Bytes,
    connect: Duration,
) -> Result<Answer, String> {
    let tcp = tokio::time::timeout(
        connect,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| format!("connect timed out after {connect:?}"))?
    .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if target.tls {
        let config = crate::dialer::tls_client(None)?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("bad TLS name: {e}"))?;
        let tls = tokio::time::timeout(
            connect,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(tls), target, headers, body).await
    } else {
        send(TokioIo::new(tcp), target, headers, body).await
    }
}

async fn send<T>(
    io: TokioIo<T>,
    target: &Target,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<Answer, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection future drives the socket; it ends with the exchange (or the timeout
    // above drops it, which closes the socket).
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let host = if target.port == 80 || target.port == 443 {
        target.host.clone()
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut request = Request::post(target.path.as_str())
        .header("host", host)
        .header("content-type", "application/json")
        .header("user-agent", concat!("Siphon/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("answer body: {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_the_urls_applications_give() {
        let t = Target::parse("http://127.0.0.1:8852/route?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8852,
                path: "/route?x=1".into()
            }
        );
        let t = Target::parse("https://app.example.com").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/"));
        let t = Target::parse("http://[::1]:9000/e").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        for bad in [
            "ftp://x/",
            "http://",
            "http://h:port/",
            "http://u:p@h/",
            "http://[::1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
