//! The one shape of "what to do with a call", shared by a TOML dialplan route, a webhook's
//! JSON answer and the originate request's `on_answer`: `action` and the fields that action
//! reads (`user`, `trunk`, `dial`, `strip`, `prepend`, `uri`, `code`, `ring_ms`,
//! `ring_timeout_s`, `forks` with their `custom_parameters`, `callback_url`), named as in
//! `[[dialplan]]`.
//!
//! What comes over the network is checked here, before anything acts on it: an
//! application may not name files on Siphon's disk (`file`) nor answer with another
//! `webhook` (no loops), a trunk must exist, a code must be a final error response.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{Action, Config, Route, RouteAuth};

/// An action as JSON (`{"action": "fork", "forks": [{"url": "wss://bot/ws"}]}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallAction {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default)]
    pub strip: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default)]
    pub ring_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_timeout_s: Option<u64>,
    #[serde(default, skip_serializing)]
    pub forks: Vec<siphon_fork::ForkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl CallAction {
    /// Parses and checks an action that came from outside (a webhook answer, an API body).
    pub fn from_json(body: &[u8], config: &Config) -> Result<CallAction, String> {
        let action: CallAction =
            serde_json::from_slice(body).map_err(|e| format!("not an action: {e}"))?;
        action.check(config)?;
        Ok(action)
    }

    /// What a route of `config` would refuse, and what only the configuration may do.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        if self.action == Action::Webhook {
            return Err("an application cannot answer with another webhook".into());
        }
        if self.code.is_some_and(|c| !(400..700).contains(&c)) {
            return Err("code must be a final error response, 400-699".into());
        }
        if self.action == Action::Trunk {
            let known = self
                .trunk
                .as_ref()
                .is_some_and(|t| config.trunks.iter().any(|k| &k.name == t));
            if !known {
                return Err("action \"trunk\" needs `trunk` naming a configured trunk".into());
            }
        }
        if let Some(dial) = &self.dial
            && !valid_number(dial)
        {
            return Err("dial: digits, letters, + * # only".into());
        }
        if self.action == Action::Uri {
            let Some(uri) = &self.uri else {
                return Err("action \"uri\" needs `uri`".into());
            };
            sip_uri_addr(uri)?;
        }
        if self.action == Action::User {
            let Some(user) = &self.user else {
                return Err("action \"user\" needs `user`".into());
            };
            if config.account(user).is_none() {
                return Err(format!("no account {user}"));
            }
        }
        if let Some(url) = &self.callback_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("callback_url must be an http:// or https:// URL".into());
        }
        for fork in &self.forks {
            fork.validate().map_err(|e| format!("fork: {e}"))?;
            // A path from the network would be a file read on its sender's behalf.
            if fork.tls_ca_file.is_some() {
                return Err("fork: tls_ca_file is only accepted in the configuration".into());
            }
        }
        Ok(())
    }

    /// The route this action amounts to for a call that matched `number` (authentication
    /// already happened: the resulting route never asks for it again).
    pub fn to_route(&self, number: &str) -> Route {
        Route {
            number: toml::Spanned::new(0..0, number.to_string()),
            action: self.action,
            auth: RouteAuth::None,
            ring_ms: self.ring_ms,
            user: self.user.clone(),
            ring_timeout_s: self.ring_timeout_s,
            trunk: self.trunk.clone(),
            dial: self.dial.clone(),
            uri: self.uri.clone(),
            strip: self.strip,
            prepend: self.prepend.clone(),
            code: self.code,
            callers: Vec::new(),
            file: None,
            forks: self.forks.clone(),
            url: None,
            fallback: None,
            connect_timeout_ms: 0,
            timeout_ms: 0,
            ringing: false,
            pass_headers: Vec::new(),
            callback_url: self.callback_url.clone(),
        }
    }
}

/// A number Siphon may put in a request URI's user part.
pub fn valid_number(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+*#".contains(c))
}

/// Where a `sip:` URI goes: its host must be an IP address (Siphon does no DNS for these),
/// the port 5060 when it has none. Refuses what would not make a clean request line.
pub fn sip_uri_addr(uri: &str) -> Result<SocketAddr, String> {
    let Some(rest) = uri.strip_prefix("sip:") else {
        return Err(format!("{uri:?} is not a sip: URI"));
    };
    if rsip::Uri::try_from(uri).is_err() || uri.contains(['<', '>', ' ', '\r', '\n']) {
        return Err(format!("bad SIP URI {uri:?}"));
    }
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '?']).next().unwrap_or_default();
    host_port
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            host_port
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 5060))
        })
        .or_else(|| {
            let v6 = host_port.strip_prefix('[')?.strip_suffix(']')?;
            v6.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 5060))
        })
        .ok_or_else(|| format!("{uri:?}: the host must be an IP address"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config() -> Config {
        Config::embedded().unwrap()
    }

    #[test]
    fn a_fork_with_custom_parameters_becomes_a_route() {
        let body = br#"{"action":"fork","forks":[{"url":"ws://127.0.0.1:8851/ws",
            "custom_parameters":{"lang":"fr"}}],"callback_url":"http://127.0.0.1:8852/ev"}"#;
        let a = CallAction::from_json(body, &config()).unwrap();
        let route = a.to_route("800");
        assert_eq!(route.action, Action::Fork);
        assert_eq!(route.number.get_ref(), "800");
        assert_eq!(route.forks[0].custom_parameters["lang"], "fr");
        assert_eq!(
            route.callback_url.as_deref(),
            Some("http://127.0.0.1:8852/ev")
        );
    }

    #[test]
    fn hostile_or_nonsense_answers_are_refused_not_obeyed() {
        let c = config();
        for body in [
            &b"not json"[..],
            br#"{}"#,
            br#"{"action":"explode"}"#,
            br#"{"action":"webhook"}"#,
            br#"{"action":"play","file":"/etc/shadow"}"#,
            br#"{"action":"reject","code":200}"#,
            br#"{"action":"trunk","trunk":"nowhere"}"#,
            br#"{"action":"user","user":"nobody-here"}"#,
            br#"{"action":"uri"}"#,
            br#"{"action":"uri","uri":"sip:agent@example.com"}"#,
            br#"{"action":"uri","uri":"sip:a@127.0.0.1>\r\nX: y"}"#,
            br#"{"action":"echo","dial":"12\r\n"}"#,
            br#"{"action":"echo","callback_url":"file:///x"}"#,
            br#"{"action":"fork","forks":[{"url":"ftp://x"}]}"#,
            br#"[1,2,3]"#,
        ] {
            assert!(
                CallAction::from_json(body, &c).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(CallAction::from_json(br#"{"action":"reject","code":486}"#, &c).is_ok());
        assert!(CallAction::from_json(br#"{"action":"echo"}"#, &c).is_ok());
        let uri = br#"{"action":"uri","uri":"sip:agent@127.0.0.1:5070"}"#;
        let route = CallAction::from_json(uri, &c).unwrap().to_route("800");
        assert_eq!(route.uri.as_deref(), Some("sip:agent@127.0.0.1:5070"));
    }
}
