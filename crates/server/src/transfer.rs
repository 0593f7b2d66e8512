//! Where a call is transferred to (issue 17 part 2): the target of `POST
//! /api/calls/{id}/transfer` and of a fork's `transfer` command, in the same `to` vocabulary
//! as originate (`user:1002`, `trunk:provider/+15551234567`, `sip:agent@host`), and the
//! transfer's state as the call table, `GET /api/calls/{id}` and the CDR show it. Pure;
//! placing the new leg is `endpoint::transfer_leg`, the media switch `media::leg`.

/// A transfer's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferTarget {
    /// A registered account: its bindings ring.
    User(String),
    /// A number through a configured trunk.
    Trunk { trunk: String, number: String },
    /// A SIP URI, called directly.
    Uri(String),
}

/// Why a `to` value is not a transfer target (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("transfer target is empty")]
    Empty,
    #[error("transfer target must be user:NAME, trunk:TRUNK/NUMBER or sip:URI, not {0:?}")]
    Unknown(String),
}

/// Longest target accepted: more is hostile or a mistake, and it ends up in logs and CDRs.
const MAX_TARGET_LEN: usize = 256;

/// Parses a `to` value.
pub(crate) fn parse_target(to: &str) -> Result<TransferTarget, TargetError> {
    let to = to.trim();
    if to.is_empty() {
        return Err(TargetError::Empty);
    }
    let unknown = || TargetError::Unknown(to.chars().take(64).collect());
    if to.len() > MAX_TARGET_LEN || !to.chars().all(|c| c.is_ascii_graphic()) {
        return Err(unknown());
    }
    let (scheme, rest) = to.split_once(':').ok_or_else(unknown)?;
    match scheme.to_ascii_lowercase().as_str() {
        "user" if !rest.is_empty() && !rest.contains(['@', ':', '/']) => {
            Ok(TransferTarget::User(rest.to_string()))
        }
        "trunk" => match rest.split_once('/') {
            Some((trunk, number)) if !trunk.is_empty() && !number.is_empty() => {
                Ok(TransferTarget::Trunk {
                    trunk: trunk.to_string(),
                    number: number.to_string(),
                })
            }
            _ => Err(unknown()),
        },
        "sip" | "sips" => siphon_sip::refer::parse_refer_to(to)
            .map(|r| TransferTarget::Uri(r.uri))
            .map_err(|_| unknown()),
        _ => Err(unknown()),
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// The new leg's INVITE is out, no final answer yet.
    Trying,
    /// The new leg rings (a 18x came back).
    Ringing,
    /// The new leg answered: the caller talks to it now.
    Completed,
    /// The new leg failed (4xx-6xx, timeout, no address): the call goes on as before.
    Failed,
}

/// A call's transfer: where to, how far it got and, once it failed, why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransferStatus {
    /// The target as the request named it (`user:1003`).
    pub target: String,
    /// Who asked: `api` (the admin API) or `service` (a fork's native `transfer` command).
    pub by: &'static str,
    pub state: TransferState,
    /// The new leg's final SIP status (200, 486, 408...), once it had one.
    pub code: Option<u16>,
    /// Why it failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An attended transfer (REFER with `Replaces`): two calls through Siphon were joined
    /// into one. Absent for blind transfers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attended: bool,
    /// For an attended transfer, the other call of the two (the caller's Call-ID): the
    /// one that ended (on the call that goes on), or the one it was joined into (in the
    /// CDR of the call that ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
}

impl TransferStatus {
    pub fn trying(target: &str, by: &'static str) -> Self {
        TransferStatus {
            target: target.to_string(),
            by,
            state: TransferState::Trying,
            code: None,
            reason: None,
            attended: false,
            joined: None,
        }
    }

    /// A completed attended transfer (REFER with `Replaces`) joining this call with the
    /// call `joined`.
    pub fn attended(target: &str, joined: &str) -> Self {
        TransferStatus {
            target: target.to_string(),
            by: "refer",
            state: TransferState::Completed,
            code: Some(200),
            reason: None,
            attended: true,
            joined: Some(joined.to_string()),
        }
    }

    /// The new leg's final status: answered (2xx) or failed with `code`.
    pub fn finished(&mut self, code: u16, reason: Option<String>) {
        self.code = Some(code);
        if (200..300).contains(&code) {
            self.state = TransferState::Completed;
            self.reason = None;
        } else {
            self.state = TransferState::Failed;
            self.reason = Some(reason.unwrap_or_else(|| failure_reason(code).to_string()));
        }
    }

    /// A new transfer may start unless one is in progress.
    pub fn in_progress(&self) -> bool {
        matches!(self.state, TransferState::Trying | TransferState::Ringing)
    }
}

/// Words for a failed transfer leg's status.
pub fn failure_reason(code: u16) -> &'static str {
    match code {
        408 => "no answer (timeout)",
        480 => "temporarily unavailable",
        486 | 600 => "busy",
        487 => "cancelled",
        404 | 604 => "not found",
        403 | 603 => "declined",
        488 | 606 => "media not acceptable",
        500..=599 => "server error",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_three_kinds() {
        assert_eq!(
            parse_target("user:1002"),
            Ok(TransferTarget::User("1002".into()))
        );
        assert_eq!(
            parse_target("trunk:provider/+15551234567"),
            Ok(TransferTarget::Trunk {
                trunk: "provider".into(),
                number: "+15551234567".into()
            })
        );
        assert_eq!(
            parse_target(" sip:agent@10.0.0.5:5070 "),
            Ok(TransferTarget::Uri("sip:agent@10.0.0.5:5070".into()))
        );
    }

    #[test]
    fn bad_targets() {
        assert_eq!(parse_target(""), Err(TargetError::Empty));
        for t in [
            "1002",
            "user:",
            "user:a@b",
            "trunk:provider",
            "trunk:/123",
            "trunk:p/",
            "tel:+1555",
            "sip:",
            "sip:a b@c",
            "user:\u{1F600}",
        ] {
            assert!(parse_target(t).is_err(), "{t:?} accepted");
        }
        assert!(parse_target(&format!("user:{}", "1".repeat(1000))).is_err());
    }

    #[test]
    fn transfer_status_goes_trying_to_completed_or_failed() {
        let mut s = TransferStatus::trying("user:1003", "api");
        assert!(s.in_progress());
        s.finished(200, None);
        assert_eq!(s.state, TransferState::Completed);
        assert!(!s.in_progress());
        let mut f = TransferStatus::trying("user:1003", "api");
        f.finished(486, None);
        assert_eq!(f.state, TransferState::Failed);
        assert_eq!(f.reason.as_deref(), Some("busy"));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["code"], 486);
        // A blind transfer shows no attended fields.
        assert!(json.get("attended").is_none() && json.get("joined").is_none());
    }

    #[test]
    fn attended_transfer_names_the_joined_call() {
        let a = TransferStatus::attended("sip:1002@127.0.0.1", "call-2@host");
        assert!(!a.in_progress());
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["attended"], true);
        assert_eq!(json["joined"], "call-2@host");
        assert_eq!(json["by"], "refer");
        assert_eq!(json["state"], "completed");
        assert_eq!(json["code"], 200);
    }
}
