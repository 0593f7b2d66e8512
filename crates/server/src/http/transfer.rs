//! `POST /api/calls/{id}/transfer`: moves a call's caller to another target (issue 17
//! part 2). The request is checked here: a body that is not `{"to": ..., "from": ...}` or
//! a target outside the `to` vocabulary is 400, an unknown call 404, a call not yet
//! answered 409. Carrying the transfer out is not built yet: an answered call gets 501,
//! and nothing about the call changes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, HttpContext};
use crate::transfer::parse_target;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: String,
    /// Caller ID for the new leg; checked like originate's once transfers are carried out.
    #[allow(dead_code)]
    from: Option<String>,
}

pub(super) async fn transfer_call(
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
    tracing::info!(call_id = %id, ?target, "transfer asked for; not built yet (501)");
    Ok((
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({
            "error": "carrying out transfers is not built yet; the call is unchanged",
            "call_id": id,
        })),
    )
        .into_response())
}
