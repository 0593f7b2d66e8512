//! Checks a parsed configuration as a whole (what serde's types cannot say), naming the
//! line of each mistake.

use std::collections::HashSet;

use super::*;

impl Config {
    pub(super) fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError::At {
                line,
                column,
                message,
            }
        };
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(ConfigError::Invalid(
                "sip: t1_ms must be positive and t2_ms at least t1_ms".into(),
            ));
        }
        if self.sip.max_message_size < 1024 {
            return Err(ConfigError::Invalid(
                "sip: max_message_size below 1024 bytes cannot carry an INVITE".into(),
            ));
        }
        if self
            .http
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::Invalid(
                "http: token must be printable ASCII without spaces".into(),
            ));
        }
        if self.sip.tls_listen.is_some() {
            let (Some(cert), Some(key)) = (&self.sip.tls_cert, &self.sip.tls_key) else {
                return Err(ConfigError::Invalid(
                    "sip: tls_listen needs tls_cert and tls_key (PEM files)".into(),
                ));
            };
            // Load them now: `siphon check-config` and start-up both catch a bad file.
            crate::tls::acceptor(cert, key)
                .map_err(|e| ConfigError::Invalid(format!("sip: TLS: {e}")))?;
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(cert), Some(key)) => {
                crate::tls::acceptor(cert, key)
                    .map_err(|e| ConfigError::Invalid(format!("http: TLS: {e}")))?;
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "http: tls_cert and tls_key go together".into(),
                ));
            }
        }
        if self.auth.algorithms.is_empty() {
            return Err(ConfigError::Invalid(
                "auth: algorithms must name at least one algorithm".into(),
            ));
        }
        let r = &self.registrar;
        if r.min_expires > r.max_expires
            || r.default_expires < r.min_expires
            || r.default_expires > r.max_expires
        {
            return Err(ConfigError::Invalid(
                "registrar: need min_expires <= default_expires <= max_expires".into(),
            ));
        }
        let p = &self.rtp;
        if !p.port_min.is_multiple_of(2) || p.port_min > p.port_max || p.port_min < 1024 {
            return Err(ConfigError::Invalid(
                "rtp: port_min must be an even port >= 1024 and not above port_max".into(),
            ));
        }
        let mut names = HashSet::new();
        for a in &self.accounts {
            if a.username.get_ref().is_empty() {
                return Err(at(a.username.span(), "empty username".into()));
            }
            if !names.insert(a.username.get_ref().clone()) {
                return Err(at(
                    a.username.span(),
                    format!("duplicate account {}", a.username.get_ref()),
                ));
            }
            if a.password.is_none() && a.allowed_ips.is_empty() {
                return Err(at(
                    a.username.span(),
                    format!(
                        "account {} has neither a password nor allowed_ips",
                        a.username.get_ref()
                    ),
                ));
            }
            if a.kind == AccountKind::Phone && a.password.is_none() {
                return Err(at(
                    a.username.span(),
                    format!("phone account {} needs a password", a.username.get_ref()),
                ));
            }
        }
        for t in &self.trunks {
            if t.register && (t.username.is_none() || t.register_expires_s == 0) {
                return Err(ConfigError::Invalid(format!(
                    "trunk {}: register = true needs a username and register_expires_s > 0",
                    t.name
                )));
            }
        }
        if let Some(events) = &self.events {
            for url in &events.urls {
                crate::http_post::Target::parse(url)
                    .map_err(|e| ConfigError::Invalid(format!("[events] urls: {e}")))?;
            }
        }
        let mut numbers = HashSet::new();
        for route in &self.dialplan {
            let n = route.number.get_ref();
            let valid = match n.strip_prefix('_') {
                Some(pattern) => crate::patterns::valid_pattern(pattern),
                None => {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+*#".contains(c))
                }
            };
            if !valid {
                return Err(at(
                    route.number.span(),
                    format!(
                        "invalid number {n:?}: digits, letters, + * # only, or a pattern \
                         (_ then digits, X, Z, N, [..], and . or ! at the end)"
                    ),
                ));
            }
            if route.code.is_some_and(|c| !(400..700).contains(&c)) {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: code must be a final error response, 400-699"),
                ));
            }
            if route.action == Action::Trunk {
                let known = route
                    .trunk
                    .as_ref()
                    .is_some_and(|t| self.trunks.iter().any(|k| &k.name == t));
                if !known {
                    return Err(at(
                        route.number.span(),
                        format!(
                            "route {n}: action \"trunk\" needs `trunk` naming a [[trunks]] entry"
                        ),
                    ));
                }
            }
            if let Some(dial) = &route.dial
                && !super::valid_number(dial)
            {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: dial: digits, letters, + * # only"),
                ));
            }
            if route.action == Action::Uri {
                let checked = match &route.uri {
                    Some(uri) => super::sip_uri_addr(uri).map(|_| ()),
                    None => Err("action \"uri\" needs `uri`".into()),
                };
                if let Err(e) = checked {
                    return Err(at(route.number.span(), format!("route {n}: {e}")));
                }
            }
            if !route.callers.is_empty() && route.auth == RouteAuth::None {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: `callers` needs auth = \"digest\" (callers are checked)"),
                ));
            }
            // The same number may route differently for different callers.
            let mut callers = route.callers.clone();
            callers.sort();
            if !numbers.insert((n.clone(), callers)) {
                return Err(at(route.number.span(), format!("duplicate number {n}")));
            }
            if let Err(e) = route.prompt() {
                return Err(at(route.number.span(), e));
            }
            // A pattern route without `user` rings whatever account was dialled.
            let pattern = n.starts_with('_');
            if route.action == Action::User && (route.user.is_some() || !pattern) {
                let user = route.user_account();
                if self.account(user).is_none() {
                    return Err(at(
                        route.number.span(),
                        format!("route {n} rings account {user}, which does not exist"),
                    ));
                }
            } else if route.user.is_some() {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: `user` only applies to action \"user\""),
                ));
            }
            if route.action == Action::Webhook {
                let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
                if !route.url.as_deref().is_some_and(http) {
                    return Err(at(
                        route.number.span(),
                        format!("route {n}: action \"webhook\" needs an http(s) `url`"),
                    ));
                }
                let fallback = route.fallback.as_deref();
                if let Some(f) = fallback
                    && (f == n.as_str()
                        || !self
                            .dialplan
                            .iter()
                            .any(|r| r.number.get_ref() == f && r.action != Action::Webhook))
                {
                    return Err(at(
                        route.number.span(),
                        format!("route {n}: fallback {f} is not a route (other than a webhook)"),
                    ));
                }
            }
            for fork in &route.forks {
                if let Err(e) = fork.validate() {
                    return Err(at(route.number.span(), format!("fork of {n}: {e}")));
                }
            }
        }
        Ok(())
    }
}
