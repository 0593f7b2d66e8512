//! The HTTP side of Siphon, on `[http] listen`: Prometheus metrics, health, and the JSON
//! admin API (`docs/openapi.yaml` describes every route).
//!
//! | route | access |
//! |---|---|
//! | `GET /metrics` | open (no Call-IDs or numbers in it) |
//! | `GET /healthz`, `GET /readyz` | open |
//! | `/api/*` | `Authorization: Bearer <[http] token>` when a token is set; when none is, see below |
//!
//! Without a token the API answers only when nothing but this host can be talking to it:
//! the listener is on a loopback address, the client is on loopback, and the request
//! carries no header a reverse proxy adds (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
//! `Via`). A proxy on the same host connects from loopback on behalf of anyone, so
//! "loopback client" alone would open the API to the world behind it. (The binary refuses
//! to start with a non-loopback listener and no token; the listener rule here keeps a
//! server built another way, tests included, just as closed.) A proxy that adds none of
//! those headers cannot be told from a local client: put a token on any API a proxy serves.
//!
//! Handlers only read shared state (the call table, the registrar's store, the counters)
//! or send a [`Command`] to the SIP core and wait for its answer; they never touch a call's
//! media directly. Every error is a JSON body `{"error": "...", "status": N}`.

pub mod admin;
pub mod metrics;
mod originate;
pub mod tls;
mod transfer;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dashmap::DashMap;
use siphon_sip::registrar::LocationStore;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::{CallSummary, Command};
use crate::counters::Counters;
use crate::rtp_ports::PortPool;
pub use tls::ClientAddr;

/// Largest request body accepted (a fork configuration is well under 4 KiB).
const BODY_LIMIT: usize = 64 * 1024;
/// How long a handler waits for the SIP core to act on a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share: read-only views of the server plus the SIP core's command
/// channel.
pub struct HttpContext {
    pub config: Arc<Config>,
    pub counters: Arc<Counters>,
    pub calls: Arc<DashMap<String, CallSummary>>,
    pub ports: Arc<PortPool>,
    pub locations: Arc<dyn LocationStore>,
    pub commands: mpsc::Sender<Command>,
    process: metrics::Process,
}

impl HttpContext {
    pub fn new(
        config: Arc<Config>,
        counters: Arc<Counters>,
        calls: Arc<DashMap<String, CallSummary>>,
        ports: Arc<PortPool>,
        locations: Arc<dyn LocationStore>,
        commands: mpsc::Sender<Command>,
    ) -> HttpContext {
        HttpContext {
            config,
            counters,
            calls,
            ports,
            locations,
            commands,
            process: metrics::Process::new(),
        }
    }
}

type Ctx = State<Arc<HttpContext>>;

/// Every route, with the admin API behind [`guard`].
pub fn router(ctx: Arc<HttpContext>) -> Router {
    let api = admin::routes()
        .merge(originate::routes())
        .merge(transfer::routes())
        .route_layer(middleware::from_fn_with_state(ctx.clone(), guard));
    Router::new()
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

/// Where the HTTP listener takes connections: plain, or HTTPS (`[http] tls_cert`).
pub enum HttpListener {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

/// Serves `router` on `listener` until `shutdown` completes; connections still open then
/// get a moment to finish.
pub async fn serve(
    listener: HttpListener,
    ctx: Arc<HttpContext>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(ctx).into_make_service_with_connect_info::<ClientAddr>();
    let result = match listener {
        HttpListener::Plain(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
        HttpListener::Tls(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
    };
    if let Err(e) = result {
        warn!(error = %e, "HTTP server failed");
    }
    info!("HTTP stopped");
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.message,
            "status": self.status.as_u16(),
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"siphon\""),
            );
        }
        resp
    }
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready to take calls: not draining.
async fn readyz(State(ctx): Ctx) -> Response {
    if ctx.counters.is_draining() {
        let body = serde_json::json!({ "status": "draining" });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    } else {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

/// The admin API's access rule (see the module documentation).
async fn guard(
    State(ctx): Ctx,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    request: Request,
    next: Next,
) -> Response {
    match authorize(
        ctx.config.http.token.as_deref(),
        ctx.config.http.listen,
        peer.ip(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            warn!(client = %peer, reason = %e.message, "admin API request refused");
            e.into_response()
        }
    }
}

/// Headers that reverse proxies add to what they relay (RFC 7239 and the de facto ones).
const PROXY_HEADERS: [&str; 7] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "via",
];

fn authorize(
    token: Option<&str>,
    listen: SocketAddr,
    client: IpAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(token) = token else {
        if !listen.ip().to_canonical().is_loopback() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the HTTP listener {listen} is not loopback-only and no [http] token is \
                     configured: the admin API needs a token"
                ),
            ));
        }
        if !client.to_canonical().is_loopback() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "no [http] token is configured: the admin API answers loopback clients only",
            ));
        }
        if let Some(name) = PROXY_HEADERS.iter().find(|h| headers.contains_key(**h)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the request came through a proxy ({name} header) and no [http] token is \
                     configured: the admin API needs a token when a proxy serves it"
                ),
            ));
        }
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        // Constant time, so the response time does not tell how much of the token matched
        // (the length is not secret).
        Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <token>",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

    #[test]
    fn without_a_token_only_loopback_gets_in() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        for listen in ["127.0.0.1:8080", "[::1]:8080", "[::ffff:127.0.0.2]:80"] {
            let listen: SocketAddr = listen.parse().unwrap();
            for ip in [lo, lo6, mapped] {
                assert!(authorize(None, listen, ip, &headers(None)).is_ok(), "{ip}");
            }
        }
        let e = authorize(None, LOOPBACK, far, &headers(Some("Bearer x"))).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn without_a_token_a_listener_off_loopback_serves_nobody() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.0.2.1:8080",
            "[::ffff:10.0.0.1]:1",
        ] {
            let e = authorize(None, listen.parse().unwrap(), lo, &headers(None)).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{listen}");
            assert!(e.message.contains("token"), "{}", e.message);
        }
    }

    #[test]
    fn without_a_token_a_proxied_request_is_refused() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for name in PROXY_HEADERS {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("203.0.113.9"));
            let e = authorize(None, LOOPBACK, lo, &h).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{name}");
            // With the token, the proxy is fine.
            let mut h = headers(Some("Bearer s3cret"));
            h.insert(name, HeaderValue::from_static("203.0.113.9"));
            assert!(
                authorize(Some("s3cret"), LOOPBACK, lo, &h).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn with_a_token_everyone_needs_it() {
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let t = Some("s3cret");
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(authorize(t, any, far, &headers(Some("Bearer s3cret"))).is_ok());
        assert!(authorize(t, any, far, &headers(Some("bearer  s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            let e = authorize(t, LOOPBACK, lo, &headers(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
    }

    #[test]
    fn token_comparison() {
        let eq = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"abcd"));
    }
}
