//! Where a message came from or goes to.

use std::fmt;
use std::net::SocketAddr;

/// The transport a message travels over. Reliability changes the transaction timers
/// (RFC 3261 §17: no retransmissions over TCP/TLS, zero-length wait states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// True for stream transports, where SIP does not retransmit.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The token used in Via headers (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// The remote end of a message: its address and the transport. For TCP/TLS the address
/// also identifies the connection, so a response to a request goes back over the
/// connection the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl Peer {
    pub fn new(addr: SocketAddr, transport: Transport) -> Self {
        Peer { addr, transport }
    }
}
