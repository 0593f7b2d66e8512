//! `POST /api/calls/{id}/transfer`: moves a call's caller to another target (issue 17
//! part 2). The request is checked here: a body that is not `{"to": ..., "from": ...}` or
//! a target outside the `to` vocabulary is 400, an unknown call 404, a call not yet
//! answered 409. An answered call Siphon serves (fork, echo, prompt) gets 202 once the new
//! leg's INVITE is out (`endpoint::transfer_leg`); the outcome is in `GET /api/calls/{id}`.
//! A bridged call likewise (its callee's leg is replaced by the new one when it answers,
//! `endpoint::b2bua::refer`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use tokio::sync::oneshot;

use super::admin::command;
use super::{ApiError, HttpContext};
use crate::control::Command;
use crate::transfer::parse_target;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: String,
    /// Caller ID for the new leg: an account's name or `caller_ids`, or (to a trunk) one
    /// of the trunk's `caller_ids`; 400 when malformed, 403 when not allowed.
    from: Option<String>,
}

pub(super) fn routes() -> axum::Router<Arc<HttpContext>> {
    axum::Router::new().route(
        "/api/calls/{id}/transfer",
        axum::routing::post(transfer_call),
    )
}

async fn transfer_call(
    State(ctx): State<Arc<HttpContext>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad path: {e}")))?;
    let body = body.map_err(|e| ApiError::new(e.status(), format!("cannot read body: {e}")))?;
    let body: TransferBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"to\": TARGET, \"from\": optional caller ID}}: {e}"),
        )
    })?;
    let target = parse_target(&body.to)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let answered = match ctx.calls.get(&id) {
        Some(call) => call.answered,
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no call with Call-ID {id}"),
            ));
        }
    };
    if !answered {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the call is not answered yet; only an answered call can be transferred",
        ));
    }
    tracing::info!(call_id = %id, ?target, "transfer asked for");
    let (done, answer) = oneshot::channel();
    let cmd = Command::Transfer {
        call_id: id.clone(),
        to: body.to.trim().to_string(),
        from: body.from.map(|f| f.trim().to_string()),
        done,
    };
    match command(&ctx, cmd, answer).await? {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "call_id": id,
                "to": body.to.trim(),
                "state": "trying",
                "url": format!("/api/calls/{id}"),
            })),
        )
            .into_response()),
        Err((code, reason)) => Err(ApiError::new(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
        )),
    }
}
