//! A node behind SIP edges (`[sip] outbound_proxy`): the edges own the location service,
//! so a call to a `user` route is one INVITE to the account's AOR, sent to an edge with a
//! Route header naming it (RFC 3261 §8.1.2, loose routing); the edge looks the AOR up and
//! forks to the phones. The edge's Record-Route in the answer puts it on every in-dialog
//! request (the dialog's route set), and those go to it too (the branch's peer).
//!
//! With several edges, the one the call came in through is tried first (it is alive: it
//! just sent the INVITE), then the others in order, through the trunk failover machinery.

use std::time::Duration;

use siphon_sip::{Peer, Transport};

use super::Target;
use crate::endpoint::Endpoint;

/// How long an edge may take to answer an INVITE at all before the next one is tried.
/// Kamailio sends 100 Trying as soon as it relays, so silence this long means it is gone.
pub(super) const EDGE_FAILOVER_TIMEOUT: Duration = Duration::from_secs(2);

impl Endpoint {
    /// The targets of a call to `user` when outbound proxies are set, in the order to try
    /// (the caller's edge first); empty when none is set (the local registrar's bindings
    /// are the targets).
    pub(super) fn edge_targets(&self, user: &str, caller: Peer) -> Vec<Target> {
        let mut proxies: Vec<_> = self.config.sip.outbound_proxy.iter().collect();
        proxies.sort_by_key(|p| p.addr != caller.addr);
        proxies
            .into_iter()
            .map(|proxy| Target {
                uri: format!("sip:{user}@{}", self.config.sip.realm),
                peer: Peer::new(proxy.addr, Transport::Udp),
                trunk: None,
                route: Some(format!("<{}>", proxy.uri)),
            })
            .collect()
    }
}
