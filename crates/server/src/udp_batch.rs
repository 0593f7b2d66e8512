//! Receiving UDP without the empty read. Tokio's `recv_from` learns that the queue is empty
//! only from a read that fails with `EAGAIN`, so a socket that gets one datagram at a time
//! (an RTP leg every 20 ms, a registrar one REGISTER at a time) pays two `recvfrom` calls
//! per datagram, one of them empty (measured in docs/benchmarks.md: half of the echo path's
//! receive syscalls, 3.4 % of a registrar's samples).
//!
//! [`try_recv_batch`] makes one `recvmmsg` for up to [`BATCH`] datagrams. When it returns
//! fewer than it had room for, the queue was empty at that moment, so the readiness is
//! cleared without the empty read; a datagram that arrives afterwards raises a new edge
//! (tokio keeps readiness that arrived after the one it was asked to clear). One syscall
//! per datagram instead of two, two small allocations per batch (see `recv_into`).
//! Used for RTP (`media`, datagrams up to [`RTP_DATAGRAM`]) and for SIP over UDP
//! (`transport::run_udp`, any datagram up to 64 KiB).
//!
//! nix provides `recvmmsg` safely (tokio has no batched receive).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one [`try_recv_batch`] can take.
pub const BATCH: usize = 4;

/// Room for one RTP datagram: an Ethernet MTU (what a larger one would be cut to is not
/// audio Siphon can use).
pub const RTP_DATAGRAM: usize = 1500;

/// Room for any UDP datagram (a SIP message over UDP may be up to 64 KiB).
pub const ANY_DATAGRAM: usize = 65536;

/// Room for one batch of datagrams and their sources: `BATCH` buffers of one datagram size.
pub struct RecvBatch {
    bufs: Vec<u8>,
    size: usize,
    got: [(usize, Option<SocketAddr>); BATCH],
    len: usize,
}

impl RecvBatch {
    /// Buffers for datagrams of up to `size` bytes (a longer one is truncated by the kernel).
    pub fn new(size: usize) -> Self {
        RecvBatch {
            bufs: vec![0; size * BATCH],
            size,
            got: [(0, None); BATCH],
            len: 0,
        }
    }

    /// The datagrams of the last batch, with their sources.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got[..self.len]
            .iter()
            .zip(self.bufs.chunks_exact(self.size))
            .filter_map(|((n, from), buf)| Some((buf.get(..*n)?, (*from)?)))
    }
}

/// Up to [`BATCH`] datagrams from `socket` in one `recvmmsg`; at least one when it returns
/// `Ok`. Cancel safe: nothing is read unless this returns.
///
/// Tokio clears a socket's readiness only when an I/O closure run by `try_io` reports
/// `WouldBlock`, and it clears only the readiness that closure saw (not an edge that came
/// later). So a batch with room to spare — the queue is empty — is reported to tokio as
/// `WouldBlock` while its datagrams stay in `batch`; a full batch keeps the readiness, and
/// the next call reads again.
#[cfg(test)] // the media tasks and `run_udp` run this loop themselves, around `readable()`
pub async fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    loop {
        socket.readable().await?;
        let n = try_recv_batch(socket, batch)?;
        if n > 0 {
            return Ok(n);
        }
    }
}

/// [`recv_batch`] without the wait: the datagrams queued now, 0 if none. A media task
/// awaits `socket.readable()` (which holds no buffer) and then calls this with a buffer it
/// borrows only for the synchronous part (`media::scratch`); the SIP UDP task owns one.
pub fn try_recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
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

fn recv_into(fd: std::os::fd::RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    let RecvBatch {
        bufs,
        size,
        got,
        len,
    } = batch;
    *len = 0;
    // Fresh headers per call: nix's `recvmmsg` sets each header's `msg_namelen` only
    // when the headers are made, and the kernel shrinks it to the length of the address
    // it wrote (16 for IPv4). Headers kept across calls and shared by sockets of both
    // families (a thread's IPv4 and IPv6 legs, the SIP sockets) then cut the next IPv6
    // source to 16 bytes: a bridged IPv6 leg's packets after the first came from a
    // garbled address and were dropped. Two small allocations per batch; a
    // `libc::recvmmsg` that resets the lengths itself would spare them.
    let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut chunks = bufs.chunks_exact_mut(*size);
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

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_and_the_next_waits_for_more() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        let mut batch = RecvBatch::new(RTP_DATAGRAM);
        // Six queued: a full batch, then the two left.
        for i in 0..6u8 {
            tx.send_to(&[i; 10], to).unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(recv_batch(&rx, &mut batch).await.unwrap(), BATCH);
        let first: Vec<(u8, SocketAddr)> = batch.packets().map(|(p, a)| (p[0], a)).collect();
        assert_eq!(first, (0..4).map(|i| (i, from)).collect::<Vec<_>>());
        assert_eq!(recv_batch(&rx, &mut batch).await.unwrap(), 2);
        assert_eq!(
            batch.packets().map(|(p, _)| p[0]).collect::<Vec<_>>(),
            [4, 5]
        );
        // The queue is empty and readiness was cleared: the next call waits for a datagram
        // and gets it (readiness that arrives later is not lost).
        let waiter = tokio::spawn(async move {
            let mut batch = RecvBatch::new(RTP_DATAGRAM);
            let n = recv_batch(&rx, &mut batch).await.unwrap();
            (
                n,
                batch.packets().map(|(p, _)| p.to_vec()).collect::<Vec<_>>(),
            )
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        tx.send_to(b"late", to).unwrap();
        // Only a guard against hanging: the datagram is there at once.
        let (n, got) = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .expect("a datagram sent after the queue emptied must wake the receiver")
            .unwrap();
        assert_eq!((n, got), (1, vec![b"late".to_vec()]));
    }

    async fn next_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> usize {
        loop {
            socket.readable().await.unwrap();
            let n = try_recv_batch(socket, batch).unwrap();
            if n > 0 {
                return n;
            }
        }
    }

    #[tokio::test]
    async fn any_datagram_arrives_whole_up_to_64_kib() {
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
        let mut batch = RecvBatch::new(ANY_DATAGRAM);
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
