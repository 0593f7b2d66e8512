//! The RTP port pool: even ports from a configured range, one per call leg, returned when
//! the leg ends. Taken once per call (signalling path), so a mutex is fine here.
//!
//! Ports are drawn at random from the free ones: in order, the next call's port is
//! predictable, and someone spraying RTP at it could take the stream before the phone
//! (see the leg tasks' latching).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

#[derive(Debug)]
pub struct PortPool {
    free: Mutex<VecDeque<u16>>,
    total: usize,
}

/// A bound RTP socket (even port) and its RTCP socket (port + 1), whose ports go back to
/// the pool when this is dropped.
#[derive(Debug)]
pub struct RtpPort {
    pub socket: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
    pool: Arc<PortPool>,
}

impl Drop for RtpPort {
    fn drop(&mut self) {
        self.pool.release(self.port);
    }
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> Arc<PortPool> {
        let free: VecDeque<u16> = (min..=max).step_by(2).collect();
        let total = free.len();
        Arc::new(PortPool {
            free: Mutex::new(free),
            total,
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    fn take(&self) -> Option<u16> {
        let mut free = self.free.lock().ok()?;
        if free.is_empty() {
            return None;
        }
        let i = rand::random_range(0..free.len());
        free.swap_remove_back(i)
    }

    fn release(&self, port: u16) {
        if let Ok(mut free) = self.free.lock() {
            free.push_back(port);
        }
    }

    /// Binds RTP and RTCP sockets on a free port pair chosen at random. Ports another
    /// program holds are skipped (and put back, to be tried again later). `None` when every port is in use:
    /// the caller answers 503.
    pub async fn allocate(self: &Arc<Self>, ip: IpAddr) -> Option<RtpPort> {
        for _ in 0..self.total.max(1) {
            let port = self.take()?;
            let rtp = UdpSocket::bind(SocketAddr::new(ip, port)).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(ip, port.wrapping_add(1))).await;
            match (rtp, rtcp) {
                (Ok(socket), Ok(rtcp)) => {
                    return Some(RtpPort {
                        socket,
                        rtcp,
                        port,
                        pool: self.clone(),
                    });
                }
                _ => self.release(port),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn ports_are_even_returned_and_exhaust() {
        let pool = PortPool::new(41000, 41004);
        assert_eq!(pool.total(), 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = pool.allocate(ip).await.unwrap();
        let b = pool.allocate(ip).await.unwrap();
        let c = pool.allocate(ip).await.unwrap();
        assert!(a.port % 2 == 0 && b.port % 2 == 0 && c.port % 2 == 0);
        assert!(pool.allocate(ip).await.is_none());
        drop(b);
        assert_eq!(pool.available(), 1);
        assert!(pool.allocate(ip).await.is_some());
    }

    /// Successive calls do not get successive ports: a port cannot be guessed from the
    /// last one.
    #[tokio::test]
    async fn ports_are_not_handed_out_in_order() {
        let pool = PortPool::new(41100, 41298);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut ports = Vec::new();
        for _ in 0..20 {
            ports.push(pool.allocate(ip).await.unwrap());
        }
        let in_order = ports
            .windows(2)
            .filter(|w| w[1].port == w[0].port + 2)
            .count();
        // In order, all 19 steps are +2; at random (100 ports) a handful at most.
        assert!(in_order < 10, "{in_order} of 19 steps were the next port");
    }
}
