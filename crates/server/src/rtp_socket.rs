//! Receiving RTP without the empty read. Tokio's `recv_from` learns that the queue is empty
//! only from a read that fails with `EAGAIN`, so a leg that gets one packet per 20 ms pays
//! two `recvfrom` calls per packet, one of them empty (measured in docs/benchmarks.md: half
//! of the echo path's receive syscalls).
//!
//! [`recv_batch`] makes one `recvmmsg` for up to [`BATCH`] datagrams. When it returns
//!   fewer than it had room for, the queue was empty at that moment, so the readiness is
//!   cleared without the empty read; a datagram that arrives afterwards raises a new edge
//!   (tokio keeps readiness that arrived after the one it was asked to clear). One syscall
//!   per packet instead of two, nothing allocated (the headers are preallocated per leg).
//!
//! nix provides `recvmmsg` safely (tokio has no batched receive).

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one [`RtpSocket::recv_batch`] can take.
pub const BATCH: usize = 4;

/// Room for one batch of datagrams and their sources (one per media task).
pub struct RecvBatch {
    bufs: [[u8; 1500]; BATCH],
    got: [(usize, Option<SocketAddr>); BATCH],
    len: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: [[0; 1500]; BATCH],
            got: [(0, None); BATCH],
            len: 0,
        }
    }
}

thread_local! {
    /// The message headers `recvmmsg` fills, one set per runtime thread, borrowed only for
    /// the duration of the (synchronous) call. They hold raw pointers, so they cannot live
    /// in a task that moves between threads; allocating them per call would allocate per
    /// packet.
    static HEADERS: RefCell<MultiHeaders<SockaddrStorage>> =
        RefCell::new(MultiHeaders::preallocate(BATCH, None));
}

impl RecvBatch {
    /// The datagrams of the last batch, with their sources.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got[..self.len]
            .iter()
            .zip(&self.bufs)
            .filter_map(|((n, from), buf)| Some((&buf[..*n], (*from)?)))
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
#[cfg(test)] // the media tasks run this loop themselves, around `media::scratch`
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
/// borrows only for the synchronous part (`media::scratch`).
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
    let RecvBatch { bufs, got, len } = batch;
    *len = 0;
    HEADERS.with(|headers| {
        let mut headers = headers
            .try_borrow_mut()
            .map_err(|_| io::Error::other("recvmmsg headers in use"))?;
        let [b0, b1, b2, b3] = bufs;
        let mut iovs = [
            [IoSliceMut::new(&mut b0[..])],
            [IoSliceMut::new(&mut b1[..])],
            [IoSliceMut::new(&mut b2[..])],
            [IoSliceMut::new(&mut b3[..])],
        ];
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

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_and_the_next_waits_for_more() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        let mut batch = RecvBatch::default();
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
            let mut batch = RecvBatch::default();
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
}
