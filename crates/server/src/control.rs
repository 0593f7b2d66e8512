//! The messages between Siphon's tasks: what the media tasks and the HTTP side ask of the
//! SIP core ([`Command`]), and what the SIP core shows of its calls ([`CallSummary`]).
//!
//! It sits below the media tasks, the signalling and the HTTP side so that each of them can
//! speak to the others without importing them: a media task that ends its call sends
//! `Command::MediaEnded` here, not a type of the endpoint's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use siphon_fork::ForkConfig;
use siphon_sip::dialog::DialogId;
use siphon_sip::sdp::Codec;
use siphon_sip::transaction::TransactionKey;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::counters::LegStats;

/// Things other tasks ask the SIP core to do.
#[derive(Debug)]
pub enum Command {
    /// A ringing INVITE reached its answer time.
    Answer(TransactionKey),
    /// A ringing INVITE was never answered.
    RingTimeout(TransactionKey),
    /// A bridged call's phones rang for the route's ring timeout (the caller's dialog).
    BridgeNoAnswer(DialogId),
    /// A trunk attempt's failover timeout (`failover_timeout_s`): if that INVITE has had
    /// no response, the call moves on to the trunk's next address.
    TrunkAttemptTimeout(DialogId, siphon_sip::transaction::TransactionKey),
    /// The same for an attempt of a leg Siphon placed itself (originate, transfer), by
    /// the attempt's INVITE transaction.
    LegAttemptTimeout(siphon_sip::transaction::TransactionKey),
    /// A bridged call's re-INVITE got 491 (glare): time to send it again on the caller's
    /// leg or the callee's (`callee`).
    GlareRetry { call: DialogId, callee: bool },
    /// A reliable 18x to this caller (its dialog) may be due again (RFC 3262).
    ReliableRetransmit(DialogId),
    /// Time to (re-)register to the trunk with this index in the configuration.
    RegisterTrunk(usize),
    /// Time for a keepalive to the (registered) trunk with this index.
    TrunkKeepalive(usize),
    /// The call's media ended on its own (RTP inactivity): hang up with BYE.
    MediaEnded { call: DialogId, reason: String },
    /// Admin API: hang up the call with this Call-ID (BYE, or 480 while it rings). `done`
    /// says whether there was such a call.
    HangUp {
        call_id: String,
        done: oneshot::Sender<bool>,
    },
    /// Admin API: start a fork named `fork_id` on a live call's media. `done` says whether
    /// the call was found.
    AttachFork {
        call_id: String,
        fork_id: String,
        config: Box<ForkConfig>,
        done: oneshot::Sender<bool>,
    },
    /// Admin API: stop a call's fork. `done` says whether the call was found.
    DetachFork {
        call_id: String,
        fork_id: String,
        done: oneshot::Sender<bool>,
    },
    /// A webhook route's application answered (or failed to: the reason) for the call
    /// whose INVITE is `invite`.
    WebhookAnswer {
        invite: TransactionKey,
        action: Result<Box<crate::config::CallAction>, String>,
    },
    /// Admin API: place a call (`POST /api/calls`). `done` gets the new call's Call-ID, or
    /// the HTTP status and reason it was refused with.
    Originate {
        request: Box<OriginateRequest>,
        done: oneshot::Sender<Result<String, (u16, String)>>,
    },
    /// Admin API: transfer a served call's caller to `to` (`POST /api/calls/{id}/transfer`).
    /// `done` gets `Ok` once the new leg's INVITE is out, or the HTTP status and reason.
    Transfer {
        call_id: String,
        to: String,
        /// Caller ID for the new leg (checked by the endpoint).
        from: Option<String>,
        done: oneshot::Sender<Result<(), (u16, String)>>,
    },
    /// A fork's service asked (native `transfer` command) to transfer the call's caller.
    ServiceTransfer { call_id: String, to: String },
    /// A phone transferred its bridged call by REFER (its old dialog) and has had 64·T1 to
    /// hang up: if it has not, Siphon sends BYE.
    ReferrerLinger(DialogId),
    /// An originated call (by Call-ID) rang for its ring timeout.
    OriginateTimeout(String),
    /// Shutdown: refuse new calls (503), let the current ones go on for `timeout`, then BYE
    /// them. `done` fires once no call is left.
    Drain {
        timeout: Duration,
        done: oneshot::Sender<()>,
    },
}

/// What the admin API and tests can see of a call.
#[derive(Debug, Clone)]
pub struct CallSummary {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub number: String,
    pub codec: Option<Codec>,
    pub rtp_port: u16,
    pub answered: bool,
    /// When the INVITE was taken (monotonic, for durations) and the wall clock then.
    pub started: Instant,
    pub started_at: SystemTime,
    /// INVITE to 200 OK, once answered.
    pub setup_time: Option<Duration>,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// The leg's RTP counters, kept by its media task.
    pub rtp: Arc<LegStats>,
    /// The call's latest transfer (`POST /api/calls/{id}/transfer`), if any.
    pub transfer: Option<crate::transfer::TransferStatus>,
}

/// `POST /api/calls`: whom to call, as whom, and what to do once answered.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateRequest {
    /// `user:<account>`, `trunk:<trunk>/<number>` or a SIP URI (`sip:user@192.0.2.1:5060`).
    pub to: String,
    /// The caller ID presented (a user part or number); it must be an account's name or
    /// one of the `caller_ids` an account may present. Default: `siphon`.
    pub from: Option<String>,
    /// How long the callee may ring (default: `[sip] ring_timeout_s`).
    pub ring_timeout_s: Option<u64>,
    /// What the answered call does: the dialplan's action shape (echo, tone, play, fork; user,
    /// trunk with `dial`, uri: click-to-call).
    #[serde(default = "default_on_answer")]
    pub on_answer: crate::config::CallAction,
    /// Added to every fork's `custom_parameters` (the fork's own win).
    #[serde(default)]
    pub custom_parameters: std::collections::BTreeMap<String, String>,
    /// This call's status events also go here.
    pub callback_url: Option<String>,
}

fn default_on_answer() -> crate::config::CallAction {
    crate::config::CallAction {
        action: crate::config::Action::Echo,
        user: None,
        trunk: None,
        dial: None,
        uri: None,
        strip: 0,
        prepend: None,
        code: None,
        ring_ms: 0,
        ring_timeout_s: None,
        forks: Vec::new(),
        callback_url: None,
    }
}
