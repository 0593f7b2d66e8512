//! Source-IP admission lists for trunks.
//!
//! A trunk is typically authenticated by where its packets come from rather than by digest
//! credentials, so the server checks the source address of each request against the trunk's
//! list of networks.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address they carry,
//! on both sides: a dual-stack socket bound to `[::]` reports IPv4 peers in that form, and an
//! operator who wrote `192.0.2.0/24` expects those peers to match. Likewise a mapped network
//! such as `::ffff:192.0.2.0/120` is stored as `192.0.2.0/24`.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// Why an access-list entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The entry is neither a network (`10.0.0.0/8`, `2001:db8::/32`) nor a bare address.
    #[error("invalid IP address or network {0:?}")]
    Invalid(String),
}

/// A list of networks; an address is admitted when any of them contains it. An empty list
/// admits nothing (see [`IpAcl::is_empty`] for callers that want "empty means no check").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAcl {
    nets: Vec<IpNet>,
}

impl IpAcl {
    /// Builds a list from networks. Host bits are cleared (`10.1.2.3/8` becomes `10.0.0.0/8`)
    /// and IPv4-mapped IPv6 networks become IPv4 networks, so matching and display agree.
    pub fn new(nets: Vec<IpNet>) -> Self {
        IpAcl {
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    /// Parses entries such as `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare `"192.0.2.7"`
    /// (a single host). Surrounding whitespace is ignored; empty entries are errors, because
    /// they usually mean a configuration typo rather than an intent.
    pub fn parse(list: &[String]) -> Result<Self, AclError> {
        let mut nets = Vec::with_capacity(list.len());
        for entry in list {
            let text = entry.trim();
            let net = IpNet::from_str(text)
                .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
                .map_err(|_| AclError::Invalid(entry.clone()))?;
            nets.push(net);
        }
        Ok(Self::new(nets))
    }

    /// True when `ip` (after unmapping `::ffff:a.b.c.d`) lies in any listed network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// True when the list has no entries (and so admits nothing).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The networks, canonicalised as described on [`IpAcl::new`].
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// Turns `::ffff:0:0/96`-contained networks into their IPv4 equivalent and clears host bits.
fn canonical_net(net: IpNet) -> IpNet {
    let mapped = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .network()
            .to_ipv4_mapped()
            .and_then(|v4| Ipv4Net::new(v4, v6.prefix_len() - 96).ok()),
        _ => None,
    };
    match mapped {
        Some(v4) => IpNet::V4(v4.trunc()),
        None => net.trunc(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn acl(list: &[&str]) -> IpAcl {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        IpAcl::parse(&list).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_and_bare_addresses() {
        let a = acl(&["10.0.0.0/8", "192.0.2.7", " 2001:db8::/32 "]);
        assert!(a.contains(ip("10.1.2.3")));
        assert!(a.contains(ip("192.0.2.7")));
        assert!(!a.contains(ip("192.0.2.8")));
        assert!(!a.contains(ip("11.0.0.1")));
        assert!(a.contains(ip("2001:db8::1")));
        assert!(!a.contains(ip("2001:db9::1")));
        assert!(!a.is_empty());
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_v4_nets() {
        let a = acl(&["192.0.2.0/24"]);
        assert!(a.contains(ip("::ffff:192.0.2.55")));
        assert!(!a.contains(ip("::ffff:198.51.100.1")));
        // A mapped network in the list matches plain IPv4 peers too.
        let b = acl(&["::ffff:198.51.100.0/120"]);
        assert_eq!(b.nets(), &["198.51.100.0/24".parse::<IpNet>().unwrap()]);
        assert!(b.contains(ip("198.51.100.9")));
        assert!(b.contains(ip("::ffff:198.51.100.9")));
        // A v6 net that is not a mapped one is left alone and does not match v4.
        let c = acl(&["::/0"]);
        assert!(!c.contains(ip("192.0.2.1")));
        assert!(c.contains(ip("2001:db8::1")));
    }

    #[test]
    fn host_bits_are_cleared() {
        let a = acl(&["10.1.2.3/8"]);
        assert_eq!(a.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(a.contains(ip("10.200.0.1")));
    }

    #[test]
    fn zero_prefix_admits_everything_of_that_family() {
        let a = acl(&["0.0.0.0/0"]);
        assert!(a.contains(ip("203.0.113.1")));
        assert!(a.contains(ip("::ffff:203.0.113.1")));
        assert!(!a.contains(ip("2001:db8::1")));
    }

    #[test]
    fn empty_list_admits_nothing() {
        let a = IpAcl::new(Vec::new());
        assert!(a.is_empty());
        assert!(!a.contains(ip("127.0.0.1")));
        assert!(IpAcl::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn invalid_entries_are_typed_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "host.example",
            "192.0.2.1/",
            "::ffff:1.2.3.4/129",
            "1.2.3.4 5",
        ] {
            let err = IpAcl::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(err, AclError::Invalid(bad.to_string()));
        }
    }
}
