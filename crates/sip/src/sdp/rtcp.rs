//! The RTCP attributes of an audio stream: `a=rtcp` (RFC 3605), the port (and address) a
//! side receives RTCP on when it is not the RTP port + 1, and `a=rtcp-mux` (RFC 5761),
//! RTP and RTCP on one port.

use std::net::{IpAddr, SocketAddr};

use super::{Attribute, MediaDescription};

/// `a=rtcp:<port>[ IN <IP4|IP6> <address>]` (RFC 3605 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttribute {
    pub port: u16,
    /// When absent, the stream's `c=` address applies.
    pub address: Option<IpAddr>,
}

impl RtcpAttribute {
    /// Reads the value of an `a=rtcp` line. None for anything unusable (port 0, not a
    /// number, out of range, an address that isn't a literal of the type named): the
    /// caller then falls back to RTP port + 1.
    pub fn parse(value: &str) -> Option<RtcpAttribute> {
        let mut words = value.split_ascii_whitespace();
        let port = words.next()?.parse::<u16>().ok().filter(|p| *p != 0)?;
        let address = match (words.next(), words.next(), words.next(), words.next()) {
            (None, ..) => None,
            (Some(net), Some(kind), Some(addr), None) if net.eq_ignore_ascii_case("IN") => {
                let addr = addr.parse::<IpAddr>().ok()?;
                let matches = match addr {
                    IpAddr::V4(_) => kind.eq_ignore_ascii_case("IP4"),
                    IpAddr::V6(_) => kind.eq_ignore_ascii_case("IP6"),
                };
                if !matches {
                    return None;
                }
                Some(addr)
            }
            _ => return None,
        };
        Some(RtcpAttribute { port, address })
    }

    /// The attribute for an RTCP port at `address` (omitted when it is the stream's `c=`
    /// address, `connection`).
    pub fn new(port: u16, address: IpAddr, connection: IpAddr) -> RtcpAttribute {
        RtcpAttribute {
            port,
            address: (address != connection).then_some(address),
        }
    }

    /// As a generic attribute, for a media description's list.
    pub fn to_attribute(self) -> Attribute {
        let value = match self.address {
            None => self.port.to_string(),
            Some(addr @ IpAddr::V4(_)) => format!("{} IN IP4 {addr}", self.port),
            Some(addr @ IpAddr::V6(_)) => format!("{} IN IP6 {addr}", self.port),
        };
        Attribute {
            name: "rtcp".to_owned(),
            value: Some(value),
        }
    }
}

/// The stream's usable `a=rtcp`, if any (the first one; a bad one counts as absent).
pub fn rtcp_attribute(media: &MediaDescription) -> Option<RtcpAttribute> {
    media
        .attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case("rtcp"))
        .and_then(|a| RtcpAttribute::parse(a.value.as_deref()?))
}

/// Whether the stream carries `a=rtcp-mux`.
pub fn has_rtcp_mux(media: &MediaDescription) -> bool {
    media
        .attributes
        .iter()
        .any(|a| a.name.eq_ignore_ascii_case("rtcp-mux"))
}

/// Where the side that sent `media` receives RTCP, per its `a=rtcp`: None without a usable
/// attribute or address (the RTP address + 1 then applies).
pub fn remote_rtcp(media: &MediaDescription, connection: Option<IpAddr>) -> Option<SocketAddr> {
    let attr = rtcp_attribute(media)?;
    let addr = attr.address.or(connection)?;
    (!addr.is_unspecified()).then(|| SocketAddr::new(addr, attr.port))
}

/// `a=rtcp-mux`.
pub fn rtcp_mux_attribute() -> Attribute {
    Attribute {
        name: "rtcp-mux".to_owned(),
        value: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_port_and_optional_address() {
        assert_eq!(
            RtcpAttribute::parse("53021"),
            Some(RtcpAttribute {
                port: 53021,
                address: None
            })
        );
        assert_eq!(
            RtcpAttribute::parse("53021 IN IP4 192.0.2.7"),
            Some(RtcpAttribute {
                port: 53021,
                address: Some("192.0.2.7".parse().unwrap())
            })
        );
        assert_eq!(
            RtcpAttribute::parse("9 in ip6 2001:db8::1").map(|a| a.address),
            Some(Some("2001:db8::1".parse().unwrap()))
        );
    }

    #[test]
    fn hostile_values_are_ignored() {
        for bad in [
            "",
            " ",
            "0",
            "-1",
            "65536",
            "99999999999999999999",
            "port",
            "5000 IN",
            "5000 IN IP4",
            "5000 IN IP4 host.example",
            "5000 IN IP6 192.0.2.1",
            "5000 IN IP4 192.0.2.1 extra",
            "5000 XX IP4 192.0.2.1",
        ] {
            assert_eq!(RtcpAttribute::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_and_reads_back() {
        let c: IpAddr = "203.0.113.10".parse().unwrap();
        let same = RtcpAttribute::new(40001, c, c).to_attribute();
        assert_eq!(same.to_string(), "a=rtcp:40001");
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        let diff = RtcpAttribute::new(40001, other, c);
        assert_eq!(
            diff.to_attribute().to_string(),
            "a=rtcp:40001 IN IP4 198.51.100.2"
        );
        assert_eq!(
            RtcpAttribute::parse(diff.to_attribute().value.as_deref().unwrap()),
            Some(diff)
        );
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        assert_eq!(
            RtcpAttribute::new(7, v6, c).to_attribute().to_string(),
            "a=rtcp:7 IN IP6 2001:db8::5"
        );
        assert_eq!(rtcp_mux_attribute().to_string(), "a=rtcp-mux");
    }
}
