//! Accounts and dialplan routes: who may register or call, and what a dialled number does.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Phone,
    Trunk,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub username: toml::Spanned<String>,
    /// Absent for trunks admitted only by source address.
    pub password: Option<String>,
    pub kind: AccountKind,
    /// Source addresses admitted without digest auth (trunks).
    #[serde(default)]
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Caller IDs (the user part of the From) this account may present besides its own
    /// name, e.g. a PBX's DID numbers. Any other From it sends is replaced by the account
    /// (`<sip:account@host>`) at the callee, in P-Asserted-Identity, the forks and the CDR.
    #[serde(default)]
    pub caller_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// What the caller sends comes back.
    Echo,
    /// A 1 kHz tone at -10 dBm0.
    Tone,
    /// Plays a WAV prompt in a loop (the route's `file`, or the built-in prompt).
    Play,
    /// Rings and never answers.
    Ring,
    /// WebSocket media fork (until the fork lands: answers like echo).
    Fork,
    /// Rings every registered contact of an account (the route's `user`, else the dialled
    /// number) in parallel; the first to answer is bridged to the caller (B2BUA).
    User,
    /// Sends the call out through a trunk (the route's `trunk`), the number (the route's
    /// `dial`, else the dialled one) rewritten by `strip` and `prepend`; bridged like `user`.
    Trunk,
    /// Calls the route's `uri` (a SIP URI whose host is an IP address, UDP); bridged like
    /// `user`.
    Uri,
    /// Refuses the call with the route's `code` (default 403), before any authentication.
    Reject,
    /// Asks an application: POSTs the call to the route's `url` and does what the JSON
    /// answer says (a [`super::CallAction`]); the `fallback` route when it cannot.
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// Anyone may call.
    None,
    /// Digest (407) with an account, or a trunk's source address.
    #[default]
    Digest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub number: toml::Spanned<String>,
    pub action: Action,
    #[serde(default)]
    pub auth: RouteAuth,
    /// Send 180 and wait this long before answering.
    #[serde(default)]
    pub ring_ms: u64,
    /// For `user`: the account whose phones ring (default: the dialled number).
    pub user: Option<String>,
    /// For `user`: how long the phones may ring before the caller gets 480 (default:
    /// `sip.ring_timeout_s`).
    pub ring_timeout_s: Option<u64>,
    /// For `trunk`: the trunk's name.
    pub trunk: Option<String>,
    /// For `trunk`: the number sent through the trunk instead of the dialled one (a
    /// forward to a fixed number; what click-to-call through a trunk dials).
    pub dial: Option<String>,
    /// For `uri`: the SIP URI called (`sip:agent@192.0.2.5:5070`).
    pub uri: Option<String>,
    /// For `trunk`: digits removed from the front of the dialled number...
    #[serde(default)]
    pub strip: usize,
    /// ...and what is put in front of what is left.
    pub prepend: Option<String>,
    /// For `reject`: the final response (400-699).
    pub code: Option<u16>,
    /// The route only applies to calls from these accounts or trunks (by account name);
    /// empty: from anyone. Needs `auth = "digest"`, so the caller is who it claims to be.
    #[serde(default)]
    pub callers: Vec<String>,
    /// For `play`: a WAV file (PCM16 8/16 kHz mono, or G.711), relative to the working
    /// directory. Without it the built-in prompt plays.
    pub file: Option<std::path::PathBuf>,
    /// WebSocket forks attached to every call of this route (`[[dialplan.forks]]`, the
    /// fields of `siphon_fork::ForkConfig`: url, mode, encoding, sample_rate, tracks, ...).
    #[serde(default)]
    pub forks: Vec<siphon_fork::ForkConfig>,
    /// For `webhook`: the application's URL (http:// or https://).
    pub url: Option<String>,
    /// For `webhook`: the number of the route used when the application is down, too slow
    /// or answers something that is not an action (absent: the caller gets 503).
    pub fallback: Option<String>,
    /// For `webhook`: how long connecting may take, and the whole request.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// For `webhook`: send 180 Ringing while the application is asked.
    #[serde(default)]
    pub ringing: bool,
    /// For `webhook`: SIP headers of the INVITE passed to the application (by name).
    #[serde(default)]
    pub pass_headers: Vec<String>,
    /// Where this call's status events also go (besides `[events] urls`).
    pub callback_url: Option<String>,
}

fn default_connect_timeout_ms() -> u64 {
    1000
}

fn default_webhook_timeout_ms() -> u64 {
    3000
}

impl Route {
    /// The number a `trunk` route sends for `dialled`: its `dial` instead when it has one,
    /// `strip` digits off, `prepend` on.
    pub fn rewrite(&self, dialled: &str) -> String {
        let number = self.dial.as_deref().unwrap_or(dialled);
        let kept: String = number.chars().skip(self.strip).collect();
        format!("{}{kept}", self.prepend.as_deref().unwrap_or(""))
    }

    /// The account a `user` route rings.
    pub fn user_account(&self) -> &str {
        self.user.as_deref().unwrap_or(self.number.get_ref())
    }

    /// The prompt a `play` route plays, loaded and checked (`None` for other actions).
    pub fn prompt(&self) -> Result<Option<std::sync::Arc<crate::prompt::Prompt>>, String> {
        if self.action != Action::Play {
            return Ok(None);
        }
        let bytes = match &self.file {
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read prompt {}: {e}", path.display()))?,
            None => crate::prompt::BUILTIN_PROMPT.to_vec(),
        };
        crate::prompt::Prompt::from_wav(&bytes)
            .map(|p| Some(std::sync::Arc::new(p)))
            .map_err(|e| {
                format!(
                    "prompt for {} is not a usable WAV: {e}",
                    self.number.get_ref()
                )
            })
    }
}
