//! The SIP core's status events (`crate::events`): what it tells applications about a
//! call when it rings, answers, is transferred and ends.

use dashmap::DashMap;
use serde_json::{Value, json};

use super::Endpoint;
use crate::cdr::CdrRecord;
use crate::control::CallSummary;
use crate::events::EventKind;

/// What every call event says about the call, from the call table.
pub(super) fn summary_data(registry: &DashMap<String, CallSummary>, call_id: &str) -> Value {
    match registry.get(call_id) {
        Some(s) => json!({
            "from": s.from,
            "to": s.to,
            "number": s.number,
            "source": s.source.to_string(),
        }),
        None => json!({}),
    }
}

impl Endpoint {
    /// A call entered the table: its own callback URL (if any) gets its events from now.
    pub(super) fn call_events_start(&self, call_id: &str, callback_url: Option<&str>) {
        if let Some(events) = &self.events {
            events.set_callback(call_id, callback_url);
        }
    }

    /// `kind` for a call still in the table, with `extra` fields merged into its data.
    pub(super) fn emit_call_event(&self, call_id: &str, kind: EventKind, extra: Option<Value>) {
        let Some(events) = &self.events else {
            return;
        };
        let mut data = summary_data(&self.registry, call_id);
        if let (Some(Value::Object(more)), Value::Object(d)) = (extra, &mut data) {
            d.extend(more);
        }
        events.emit(call_id, kind, data);
    }

    /// `call.transferred`: the call's caller now talks to `target` (an account, trunk
    /// number or URI as the transfer named it); `by` says who asked (`api`, `refer`).
    pub(super) fn emit_call_transferred(&self, call_id: &str, target: &str, by: &str) {
        self.emit_call_event(
            call_id,
            EventKind::CallTransferred,
            Some(json!({ "target": target, "by": by })),
        );
    }

    /// `call.ended` with the call's CDR (built whether or not CDRs are written), then the
    /// call's callback URL is forgotten (the forks' `fork.stopped` that follow still go to
    /// `[events] urls`).
    pub(super) fn emit_call_ended(&self, call_id: &str, cdr: Option<&CdrRecord>) {
        let Some(events) = &self.events else {
            return;
        };
        let cdr = cdr
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(Value::Null);
        let reason = cdr.get("end_reason").cloned().unwrap_or(Value::Null);
        events.emit(
            call_id,
            EventKind::CallEnded,
            json!({ "reason": reason, "cdr": cdr }),
        );
        events.forget_call(call_id);
    }
}
