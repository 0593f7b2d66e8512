//! Where a leg Siphon places goes, and as whom: the `to` of originate and transfer
//! (`user:`, `trunk:`, `sip:`) resolved to the INVITEs to send, and the `from` (caller ID)
//! checked against what the target may be shown.

use std::net::SocketAddr;

use siphon_sip::{Peer, Transport};

use super::uac_leg::LegPlan;
use super::{Endpoint, now};
use crate::config::Config;

/// Whom an originate request calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Callee {
    /// `user:1002`: a registered account's phone.
    User(String),
    /// `trunk:provider/+15551234567`.
    Trunk { trunk: String, number: String },
    /// `sip:bot@192.0.2.1:5070` (an IP address: no DNS for these).
    Uri { uri: String, addr: SocketAddr },
}

/// Reads the `to` of an originate request.
pub(super) fn parse_callee(to: &str) -> Result<Callee, String> {
    if let Some(user) = to.strip_prefix("user:") {
        let ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c));
        return ok
            .then(|| Callee::User(user.to_string()))
            .ok_or_else(|| format!("bad account in {to:?}"));
    }
    if let Some(rest) = to.strip_prefix("trunk:") {
        let (trunk, number) = rest
            .split_once('/')
            .ok_or("a trunk target is trunk:<name>/<number>")?;
        let ok = !trunk.is_empty() && crate::config::valid_number(number);
        return ok
            .then(|| Callee::Trunk {
                trunk: trunk.to_string(),
                number: number.to_string(),
            })
            .ok_or_else(|| format!("bad trunk target {to:?}"));
    }
    if to.starts_with("sip:") {
        let addr = crate::config::sip_uri_addr(to)?;
        return Ok(Callee::Uri {
            uri: to.to_string(),
            addr,
        });
    }
    Err(format!(
        "to must be user:<account>, trunk:<trunk>/<number> or sip:<uri>, not {to:?}"
    ))
}

/// A resolved target: the first INVITE's Request-URI and next hop, the From host (a
/// trunk's domain), and what else the leg tries (other bindings, other addresses,
/// credentials).
pub(super) struct Resolved {
    pub(super) uri: String,
    pub(super) peer: Peer,
    pub(super) from_host: Option<String>,
    pub(super) plan: LegPlan,
}

impl Endpoint {
    /// Resolves `callee`: every registered binding of an account (rung in parallel),
    /// every address of a trunk (tried in order), a SIP URI as given.
    pub(super) fn resolve_leg(&self, callee: &Callee) -> Result<Resolved, (u16, String)> {
        match callee {
            Callee::User(user) => {
                if self.config.account(user).is_none() {
                    return Err((404, format!("no account {user}")));
                }
                let mut bindings = self
                    .registrar
                    .lookup(now(), user)
                    .into_iter()
                    .map(|b| (b.contact, b.source));
                let Some((uri, peer)) = bindings.next() else {
                    return Err((404, format!("account {user} has no registered phone")));
                };
                Ok(Resolved {
                    uri,
                    peer,
                    from_host: None,
                    plan: LegPlan {
                        forks: bindings.collect(),
                        ..LegPlan::default()
                    },
                })
            }
            Callee::Trunk { trunk, number } => {
                let Some(t) = self.config.trunk(trunk) else {
                    return Err((404, format!("no trunk {trunk}")));
                };
                let domain = t.domain();
                let mut peers = self.trunk_peers(t).into_iter();
                let Some(peer) = peers.next() else {
                    return Err((503, format!("trunk {trunk} has no address")));
                };
                Ok(Resolved {
                    uri: format!("sip:{number}@{domain}"),
                    peer,
                    from_host: Some(domain),
                    plan: LegPlan {
                        alternates: peers.collect(),
                        failover_timeout: std::time::Duration::from_secs(
                            t.failover_timeout_s.max(1),
                        ),
                        credentials: t.credentials(),
                        ..LegPlan::default()
                    },
                })
            }
            Callee::Uri { uri, addr } => Ok(Resolved {
                uri: uri.clone(),
                peer: Peer::new(*addr, Transport::Udp),
                from_host: None,
                plan: LegPlan::default(),
            }),
        }
    }
}

/// Whether a new leg to `callee` may present `from` as its caller: an account's name, or
/// a caller ID an account may present (`caller_ids`); for a trunk target also a caller ID
/// in that trunk's `caller_ids` (the numbers the provider lets Siphon present). Anything
/// else would let the API spoof anyone.
pub(super) fn caller_id_allowed(config: &Config, from: &str, callee: &Callee) -> bool {
    if from == "siphon"
        || config
            .accounts
            .iter()
            .any(|a| a.username.get_ref() == from || a.caller_ids.iter().any(|c| c == from))
    {
        return true;
    }
    match callee {
        Callee::Trunk { trunk, .. } => config
            .trunk(trunk)
            .is_some_and(|t| t.caller_ids.iter().any(|c| c == from)),
        _ => false,
    }
}

/// A caller ID goes into a From URI's user part: only the characters a number or an
/// account name has (no header injection).
pub(super) fn caller_id_is_well_formed(from: &str) -> bool {
    !from.is_empty()
        && from.len() <= 64
        && from
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_caller_ids_an_account_or_the_trunk_may_present_are_allowed() {
        let mut config = Config::embedded().unwrap();
        let account = config.accounts[0].username.get_ref().clone();
        let user = Callee::User(account.clone());
        assert!(caller_id_allowed(&config, &account, &user));
        assert!(caller_id_allowed(&config, "siphon", &user));
        assert!(!caller_id_allowed(&config, "+19998887777", &user));
        config.trunks.push(
            toml::from_str(
                "name = \"provider\"\naddress = \"192.0.2.1:5060\"\ncaller_ids = [\"+15550001111\"]",
            )
            .unwrap(),
        );
        let via_trunk = Callee::Trunk {
            trunk: "provider".into(),
            number: "+15551234567".into(),
        };
        assert!(caller_id_allowed(&config, "+15550001111", &via_trunk));
        assert!(!caller_id_allowed(&config, "+15550001111", &user));
        assert!(!caller_id_allowed(&config, "+15550002222", &via_trunk));
    }

    #[test]
    fn targets_are_read_or_refused() {
        assert_eq!(parse_callee("user:1002"), Ok(Callee::User("1002".into())));
        assert_eq!(
            parse_callee("trunk:provider/+15551234567"),
            Ok(Callee::Trunk {
                trunk: "provider".into(),
                number: "+15551234567".into()
            })
        );
        assert_eq!(
            parse_callee("sip:bot@127.0.0.1:5870"),
            Ok(Callee::Uri {
                uri: "sip:bot@127.0.0.1:5870".into(),
                addr: "127.0.0.1:5870".parse().unwrap()
            })
        );
        assert!(matches!(
            parse_callee("sip:bot@[::1]"),
            Ok(Callee::Uri { addr, .. }) if addr.port() == 5060
        ));
        for bad in [
            "",
            "user:",
            "user:a b",
            "trunk:provider",
            "trunk:/123",
            "trunk:p/12;x",
            "sip:bot@example.com",
            "tel:+1555",
            "sip:a@1.2.3.4>\r\nX: y",
        ] {
            assert!(parse_callee(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn caller_ids_are_numbers_or_names() {
        for ok in ["1001", "+15551234567", "agent.smith", "*72#"] {
            assert!(caller_id_is_well_formed(ok), "{ok}");
        }
        for bad in ["", "a b", "1001>\r\nX: y", "a@b", "<sip:x@y>"] {
            assert!(!caller_id_is_well_formed(bad), "{bad:?}");
        }
    }
}
