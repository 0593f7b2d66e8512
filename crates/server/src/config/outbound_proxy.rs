//! `[sip] outbound_proxy`: the SIP edge (Kamailio in front of a cluster of nodes) that owns
//! the location service. Calls to `user` routes go to the AOR through it, with a Route
//! header naming it (RFC 3261 §8.1.2 loose routing), instead of the local registrar.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// A loose-routing proxy given by address: `sip:127.0.0.2:5060;lr`. Over UDP; by IP
/// address, since the edge of a cluster has a fixed one (no DNS lookup on the call path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundProxy {
    /// The URI as the Route header names it, always with `lr`.
    pub uri: String,
    pub addr: SocketAddr,
}

impl OutboundProxy {
    pub fn parse(text: &str) -> Result<OutboundProxy, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix("sip:")
            .ok_or_else(|| format!("outbound_proxy {text:?}: a sip: URI is expected"))?;
        let (hostport, params) = match rest.split_once(';') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        if hostport.contains('@') {
            return Err(format!(
                "outbound_proxy {text:?}: a proxy URI has no user part"
            ));
        }
        for p in params.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            if name.eq_ignore_ascii_case("transport") && !value.eq_ignore_ascii_case("udp") {
                return Err(format!("outbound_proxy {text:?}: only UDP is supported"));
            }
        }
        let addr = hostport
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                let ip = hostport.trim_start_matches('[').trim_end_matches(']');
                ip.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 5060))
            })
            .ok_or_else(|| {
                format!("outbound_proxy {text:?}: host must be an IP address (and port)")
            })?;
        let lr = params
            .split(';')
            .any(|p| p.eq_ignore_ascii_case("lr") || p.to_ascii_lowercase().starts_with("lr="));
        let uri = if lr {
            text.to_string()
        } else {
            format!("{text};lr")
        };
        Ok(OutboundProxy { uri, addr })
    }
}

/// `outbound_proxy = "sip:a;lr"` or a list of edges, tried in order (the next one when an
/// INVITE gets no response in time or a 5xx): `["sip:a;lr", "sip:b;lr"]`.
pub fn deserialize_proxies<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<OutboundProxy>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let texts = match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(ts) => ts,
    };
    texts
        .iter()
        .map(|t| OutboundProxy::parse(t).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn forms() {
        let p = OutboundProxy::parse("sip:127.0.0.2:5060;lr").unwrap();
        assert_eq!(p.addr, "127.0.0.2:5060".parse().unwrap());
        assert_eq!(p.uri, "sip:127.0.0.2:5060;lr");
        let p = OutboundProxy::parse("sip:10.0.0.1").unwrap();
        assert_eq!(p.addr, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(p.uri, "sip:10.0.0.1;lr");
        let p = OutboundProxy::parse("sip:[::1]:5070;lr;transport=udp").unwrap();
        assert_eq!(p.addr, "[::1]:5070".parse().unwrap());
        let p = OutboundProxy::parse("sip:[::1]").unwrap();
        assert_eq!(p.addr, "[::1]:5060".parse().unwrap());
    }

    #[test]
    fn refused() {
        for bad in [
            "127.0.0.2",
            "sip:edge.example.com",
            "sip:u@127.0.0.2",
            "sip:127.0.0.2;transport=tcp",
            "sip:",
        ] {
            assert!(OutboundProxy::parse(bad).is_err(), "{bad}");
        }
    }
}
