//! Receiving SIP datagrams without the empty read. Tokio's `recv_from` learns that the
//! socket's queue is empty only from a read that fails with `EAGAIN`, so a registrar that
//! gets one REGISTER at a time pays two `recvfrom` calls per request, one of them empty
//! (docs/benchmarks.md, "Registrar: parsing and memory": 3.4 % of the samples).
//!
//! [`try_recv_batch`] makes one `recvmmsg` for up to [`BATCH`] datagrams. When it returns
//! fewer than it had room for, the queue was empty at that moment, so tokio's readiness is
//! cleared without the empty read; a datagram that arrives afterwards raises a new edge.
//! The same technique as `rtp_socket.rs` uses for RTP, with buffers that hold any UDP
//! datagram (a SIP message may be up to 64 KiB).

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one [`try_recv_batch`] can take.
pub const BATCH: usize = 4;

/// Room for one datagram: the largest a UDP socket can deliver.
const DATAGRAM: usize = 65536;

/// Buffers for one batch of datagrams and their sources (one per UDP receive task).
pub struct Datagrams {
    bufs: Vec<u8>,
    got: [(usize, Option<SocketAddr>); BATCH],
    len: usize,
}

impl Default for Datagrams {
    fn default() -> Self {
        Datagrams {
            bufs: vec![0; DATAGRAM * BATCH],
            got: [(0, None); BATCH],
            len: 0,
        }
    }
}

impl Datagrams {
    /// The datagrams of the last batch, with their sources.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got[..self.len]
            .iter()
            .zip(self.bufs.chunks_exact(DATAGRAM))
            .filter_map(|((n, from), buf)| Some((buf.get(..*n)?, (*from)?)))
    }
}

thread_local! {
    /// The message headers `recvmmsg` fills, one set per runtime thread, borrowed only for
    /// the (synchronous) call: they hold raw pointers, so they cannot live in a task that
    /// moves between threads, and allocating them per call would allocate per datagram.
    static HEADERS: RefCell<MultiHeaders<SockaddrStorage>> =
        RefCell::new(MultiHeaders::preallocate(BATCH, None));
}

/// The datagrams queued on `socket` now (up to [`BATCH`]), 0 if none. Call after
/// `socket.readable()`.
///
/// Tokio clears a socket's readiness only when an I/O closure run by `try_io` reports
/// `WouldBlock`, and only the readiness that closure saw. So a batch with room to spare —
/// the queue was empty — is reported to tokio as `WouldBlock` while its datagrams stay in
/// `batch`; a full batch keeps the readiness, and the next call reads again.
pub fn try_recv_batch(socket: &UdpSocket, batch: &mut Datagrams) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    batch.len = 0;
    let read = socket.try_io(Interest::READABLE, || {
        let n = recv_into(fd, batch)?;
        if n < BATCH {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match read {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(batch.len),
        Err(e) => Err(e),
    }
}

fn recv_into(fd: std::os::fd::RawFd, batch: &mut Datagrams) -> io::Result<usize> {
    let Datagrams { bufs, got, len } = batch;
    *len = 0;
    HEADERS.with(|headers| {
        let mut headers = headers
            .try_borrow_mut()
            .map_err(|_| io::Error::other("recvmmsg headers in use"))?;
        let mut chunks = bufs.chunks_exact_mut(DATAGRAM);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let msgs = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for (slot, m) in got.iter_mut().zip(msgs) {
            *slot = (m.bytes, m.address.and_then(|a| to_std(&a)));
            *len += 1;
        }
        Ok(*len)
    })
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    async fn next_batch(socket: &UdpSocket, batch: &mut Datagrams) -> usize {
        loop {
            socket.readable().await.unwrap();
            let n = try_recv_batch(socket, batch).unwrap();
            if n > 0 {
                return n;
            }
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_whole_and_the_next_waits_for_more() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        // Six datagrams, one larger than an Ethernet frame: a full batch, then the rest.
        let big = vec![b'x'; 9000];
        for i in 0..5u8 {
            tx.send_to(&[b'0' + i], to).unwrap();
        }
        tx.send_to(&big, to).unwrap();
        let mut batch = Datagrams::default();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        while seen.len() < 6 {
            let n = tokio::time::timeout(Duration::from_secs(10), next_batch(&rx, &mut batch))
                .await
                .expect("the queued datagrams arrive");
            assert!((1..=BATCH).contains(&n));
            for (data, source) in batch.packets() {
                assert_eq!(source, from);
                seen.push(data.to_vec());
            }
        }
        assert_eq!(
            seen[..5],
            [b"0", b"1", b"2", b"3", b"4"].map(|b| b.to_vec())
        );
        assert_eq!(seen[5], big, "a datagram over 1500 bytes arrives whole");

        // The queue is empty now: the next batch waits until a datagram arrives.
        let waiting = tokio::time::timeout(Duration::from_millis(200), next_batch(&rx, &mut batch));
        assert!(waiting.await.is_err(), "nothing queued, nothing returned");
        tx.send_to(b"late", to).unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), next_batch(&rx, &mut batch))
            .await
            .expect("a datagram after an empty queue wakes the reader");
        assert_eq!(n, 1);
        assert_eq!(
            batch.packets().next().map(|(d, _)| d.to_vec()),
            Some(b"late".to_vec())
        );
    }
}
