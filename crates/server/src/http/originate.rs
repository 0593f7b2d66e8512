//! `POST /api/calls`: place a call (see `endpoint::originate`). Answers `201` with the new
//! call's id as soon as the INVITE is sent; progress comes as status events and in
//! `GET /api/calls/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::oneshot;

use super::admin::{command, fork_url_allowed};
use super::{ApiError, HttpContext};
use crate::control::{Command, OriginateRequest};

pub(super) fn routes() -> axum::Router<Arc<HttpContext>> {
    axum::Router::new().route("/api/calls", axum::routing::post(originate))
}

async fn originate(
    State(ctx): State<Arc<HttpContext>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), format!("cannot read body: {e}")))?;
    let request: OriginateRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a call request: {e}"),
        )
    })?;
    // The same fences as attaching a fork: no connecting to arbitrary addresses (SSRF).
    for fork in &request.on_answer.forks {
        fork_url_allowed(&ctx, &fork.url)?;
    }
    let (done, answer) = oneshot::channel();
    let cmd = Command::Originate {
        request: Box::new(request),
        done,
    };
    match command(&ctx, cmd, answer).await? {
        Ok(call_id) => {
            let location = format!("/api/calls/{call_id}");
            let mut resp = (
                StatusCode::CREATED,
                Json(json!({ "call_id": call_id, "state": "dialing", "url": location })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Err((code, reason)) => Err(ApiError::new(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
        )),
    }
}
