//! The JSON admin API under `/api`: calls (list, inspect, hang up), their forks (attach,
//! detach) and the registrar's bindings. `docs/openapi.yaml` is its contract.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};
use siphon_fork::ForkConfig;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ApiError, COMMAND_TIMEOUT, Ctx, HttpContext};
use crate::config::AccountKind;
use crate::control::{CallSummary, Command};
use crate::counters::get as load;
use crate::fork_metrics::ForkView;
use siphon_fork::redact_url;

pub(super) fn routes() -> Router<Arc<HttpContext>> {
    Router::new()
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{id}", get(show_call).delete(hang_up))
        .route("/api/calls/{id}/forks", get(list_forks).post(attach_fork))
        .route("/api/calls/{id}/forks/{fork}", delete(detach_fork))
        .route("/api/registrations", get(registrations))
        .route("/api/sip-trace", get(sip_trace).put(set_sip_trace))
}

/// Whether every SIP message is logged in full (target `siphon::sip_trace`).
async fn sip_trace(State(ctx): Ctx) -> ApiResult {
    let enabled = ctx.counters.sip_trace.load(Ordering::Relaxed);
    Ok(Json(json!({ "enabled": enabled })).into_response())
}

/// Switches SIP message tracing: body `{"enabled": true|false}`; answers the new state.
async fn set_sip_trace(State(ctx): Ctx, body: Result<Bytes, BytesRejection>) -> ApiResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Switch {
        enabled: bool,
    }
    let body = body.map_err(|e| ApiError::new(e.status(), format!("cannot read body: {e}")))?;
    let switch: Switch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"enabled\": true|false}}: {e}"),
        )
    })?;
    ctx.counters
        .sip_trace
        .store(switch.enabled, Ordering::Relaxed);
    tracing::info!(enabled = switch.enabled, "SIP message tracing switched");
    Ok(Json(json!({ "enabled": switch.enabled })).into_response())
}

type ApiResult = Result<Response, ApiError>;

fn path_error(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("bad path: {e}"))
}

async fn list_calls(State(ctx): Ctx) -> ApiResult {
    let mut calls: Vec<(Instant, Value)> = ctx
        .calls
        .iter()
        .map(|c| (c.started, call_json(&ctx, c.value())))
        .collect();
    calls.sort_by_key(|(t, _)| *t);
    let calls: Vec<Value> = calls.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({ "count": calls.len(), "calls": calls })).into_response())
}

async fn show_call(State(ctx): Ctx, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(id) = id.map_err(path_error)?;
    let call = ctx.calls.get(&id).map(|c| call_json(&ctx, c.value()));
    match call {
        Some(call) => Ok(Json(call).into_response()),
        None => Err(no_call(&id)),
    }
}

async fn hang_up(State(ctx): Ctx, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(call_id) = id.map_err(path_error)?;
    let (done, found) = oneshot::channel();
    let found = command(
        &ctx,
        Command::HangUp {
            call_id: call_id.clone(),
            done,
        },
        found,
    )
    .await?;
    if !found {
        return Err(no_call(&call_id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_forks(State(ctx): Ctx, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(call_id) = id.map_err(path_error)?;
    if !ctx.calls.contains_key(&call_id) {
        return Err(no_call(&call_id));
    }
    let forks = forks_json(&ctx, &call_id);
    Ok(Json(json!({ "forks": forks })).into_response())
}

async fn attach_fork(
    State(ctx): Ctx,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(call_id) = id.map_err(path_error)?;
    let body = body.map_err(|e| ApiError::new(e.status(), format!("cannot read body: {e}")))?;
    let config: ForkConfig = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a fork configuration: {e}"),
        )
    })?;
    // The fork task would read this file: a path from the network is a file read on the
    // server's behalf (and its error text an oracle for what exists). A private CA belongs
    // in a dialplan fork, set by whoever runs the server.
    if config.tls_ca_file.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "tls_ca_file is not accepted from the API (Siphon reads no file path it is \
             sent); configure a private CA on a [[dialplan.forks]] entry",
        ));
    }
    config
        .validate()
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    fork_url_allowed(&ctx, &config.url)?;
    if !ctx.calls.contains_key(&call_id) {
        return Err(no_call(&call_id));
    }
    let fork_id = ctx.counters.forks.new_fork_id();
    let (done, found) = oneshot::channel();
    let cmd = Command::AttachFork {
        call_id: call_id.clone(),
        fork_id: fork_id.clone(),
        config: Box::new(config.clone()),
        done,
    };
    if !command(&ctx, cmd, found).await? {
        return Err(no_call(&call_id));
    }
    let location = format!("/api/calls/{}/forks/{fork_id}", encode_segment(&call_id));
    let body = json!({
        "id": fork_id,
        "call_id": call_id,
        "url": redact_url(&config.url),
        "mode": config.mode.as_str(),
    });
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Where the API may fork to (`[http] fork_url_prefixes`, `allow_any_fork_url`, and the
/// services of the dialplan's forks): without it the API would make Siphon connect to any
/// address it is given, internal ones included (SSRF).
pub(super) fn fork_url_allowed(ctx: &HttpContext, url: &str) -> Result<(), ApiError> {
    let dialplan = ctx
        .config
        .dialplan
        .iter()
        .flat_map(|r| r.forks.iter().map(|f| f.url.as_str()));
    if ctx.config.http.admits_fork_url(url, dialplan) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "fork URL {} is not allowed: the API forks only to the services of the \
             dialplan's forks and to [http] fork_url_prefixes (or any URL with [http] \
             allow_any_fork_url = true)",
            redact_url(url)
        ),
    ))
}

async fn detach_fork(
    State(ctx): Ctx,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((call_id, fork_id)) = ids.map_err(path_error)?;
    if !ctx.calls.contains_key(&call_id) {
        return Err(no_call(&call_id));
    }
    let known = ctx
        .counters
        .forks
        .forks_of(Some(&call_id))
        .iter()
        .any(|f| f.info.fork_id == fork_id);
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("call {call_id} has no fork {fork_id}"),
        ));
    }
    let (done, found) = oneshot::channel();
    let cmd = Command::DetachFork {
        call_id: call_id.clone(),
        fork_id,
        done,
    };
    if !command(&ctx, cmd, found).await? {
        return Err(no_call(&call_id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn registrations(State(ctx): Ctx) -> ApiResult {
    let now = Instant::now().into_std();
    let list: Vec<Value> = ctx
        .locations
        .all(now)
        .into_iter()
        .map(|(aor, bindings)| {
            let kind = account_kind(&ctx, &aor);
            let bindings: Vec<Value> = bindings
                .iter()
                .map(|b| {
                    json!({
                        "contact": b.contact,
                        "expires_in_s": b.expires_at.saturating_duration_since(now).as_secs(),
                        "source": b.source.addr.to_string(),
                        "transport": b.source.transport.via_token(),
                        "user_agent": b.user_agent,
                    })
                })
                .collect();
            json!({ "aor": aor, "kind": kind, "bindings": bindings })
        })
        .collect();
    Ok(Json(json!({ "count": list.len(), "registrations": list })).into_response())
}

/// `phone` or `trunk` from the account of that name (`unknown` if it has none).
pub(super) fn account_kind(ctx: &HttpContext, aor: &str) -> &'static str {
    match ctx.config.account(aor).map(|a| a.kind) {
        Some(AccountKind::Phone) => "phone",
        Some(AccountKind::Trunk) => "trunk",
        None => "unknown",
    }
}

/// Sends `cmd` to the SIP core and waits (bounded) for its answer.
pub(super) async fn command<T>(
    ctx: &HttpContext,
    cmd: Command,
    answer: oneshot::Receiver<T>,
) -> Result<T, ApiError> {
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the SIP core is not answering",
        )
    };
    tokio::time::timeout(COMMAND_TIMEOUT, ctx.commands.send(cmd))
        .await
        .map_err(|_| unavailable())?
        .map_err(|_| unavailable())?;
    tokio::time::timeout(COMMAND_TIMEOUT, answer)
        .await
        .map_err(|_| unavailable())?
        .map_err(|_| unavailable())
}

fn no_call(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no call with Call-ID {id}"))
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn call_json(ctx: &HttpContext, c: &CallSummary) -> Value {
    let rtp = &c.rtp;
    json!({
        "call_id": c.call_id,
        "from": c.from,
        "to": c.to,
        "number": c.number,
        "source": c.source.to_string(),
        "state": if c.answered { "answered" } else { "ringing" },
        "codec": c.codec.map(|c| c.name()),
        "started_at": c.started_at.duration_since(UNIX_EPOCH).map(secs).unwrap_or(0.0),
        "duration_s": secs(c.started.elapsed()),
        "setup_time_s": c.setup_time.map(secs),
        "rtp": {
            "local_port": c.rtp_port,
            "remote": c.rtp.latched().map(|a| a.to_string()),
            "packets_in": load(&rtp.packets_in),
            "packets_out": load(&rtp.packets_out),
            "bytes_in": load(&rtp.bytes_in),
            "bytes_out": load(&rtp.bytes_out),
            "lost": load(&rtp.lost),
            "late": load(&rtp.late),
            "jitter_ms": load(&rtp.jitter_us) as f64 / 1000.0,
        },
        "forks": forks_json(ctx, &c.call_id),
        "transfer": c.transfer,
    })
}

fn forks_json(ctx: &HttpContext, call_id: &str) -> Vec<Value> {
    ctx.counters
        .forks
        .forks_of(Some(call_id))
        .iter()
        .map(fork_json)
        .collect()
}

fn fork_json(f: &ForkView) -> Value {
    json!({
        "id": f.info.fork_id,
        "url": redact_url(&f.info.url),
        "mode": f.info.mode.as_str(),
        "state": f.state.as_str(),
        "age_s": secs(f.age),
        "frames_sent": f.frames_sent,
        "frames_dropped": f.frames_dropped,
        "frames_received": f.frames_received,
        "frames_played": f.frames_played,
        "reconnects": f.reconnects,
        "latency_mean_ms": f.latency_mean.map(|d| d.as_secs_f64() * 1000.0),
    })
}

/// Percent-encodes a path segment (Call-IDs often hold `@`, sometimes `/` or spaces).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a1b2@host"), "a1b2@host");
        assert_eq!(encode_segment("x/y z"), "x%2Fy%20z");
    }
}
