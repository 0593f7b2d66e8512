//! Stream connection slots: how many TCP/TLS connections a listener holds, in all and
//! per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::lock;

/// Open stream connections (TCP or TLS) of one listener: at most `max_total` in all, and
/// at most `max_per_source` from one address (0: no limit per address), so one address
/// cannot take every slot. A slot is given back when its [`Slot`] is dropped, however the
/// connection's task ends.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    table: Arc<Mutex<SlotTable>>,
}

#[derive(Debug)]
struct SlotTable {
    max_total: usize,
    max_per_source: usize,
    total: usize,
    /// Only addresses with a connection open, so never more entries than `max_total`.
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// Every slot is taken.
    Full,
    /// The connection's address has all the slots one address may have.
    SourceFull,
}

/// One open connection's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Mutex<SlotTable>>,
    ip: IpAddr,
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_source: usize) -> ConnectionSlots {
        ConnectionSlots {
            table: Arc::new(Mutex::new(SlotTable {
                max_total,
                max_per_source,
                total: 0,
                by_source: HashMap::new(),
            })),
        }
    }

    /// A slot for a connection from `ip`, if the limits leave one.
    pub fn acquire(&self, ip: IpAddr) -> Result<Slot, SlotRefused> {
        let mut t = lock(&self.table);
        if t.total >= t.max_total {
            return Err(SlotRefused::Full);
        }
        let from_source = t.by_source.get(&ip).copied().unwrap_or(0);
        if t.max_per_source > 0 && from_source >= t.max_per_source {
            return Err(SlotRefused::SourceFull);
        }
        t.total += 1;
        t.by_source.insert(ip, from_source + 1);
        Ok(Slot {
            table: self.table.clone(),
            ip,
        })
    }

    /// Connections open in all, and addresses they come from.
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let t = lock(&self.table);
        (t.total, t.by_source.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.by_source.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i))
    }

    #[test]
    fn one_address_cannot_take_every_connection_slot() {
        let slots = ConnectionSlots::new(4, 2);
        let a = ip(1);
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(a).unwrap_err(), SlotRefused::SourceFull);
        let _b = slots.acquire(ip(2)).unwrap();
        let _c = slots.acquire(ip(3)).unwrap();
        assert_eq!(slots.acquire(ip(4)).unwrap_err(), SlotRefused::Full);
        // A slot given back can be taken again, by anyone.
        drop(first);
        assert_eq!(slots.open(), (3, 3));
        let _again = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(ip(5)).unwrap_err(), SlotRefused::Full);
        // 0: no limit per address, only the total.
        let open = ConnectionSlots::new(3, 0);
        let held: Vec<Slot> = (0..3).map(|_| open.acquire(a).unwrap()).collect();
        assert_eq!(open.acquire(a).unwrap_err(), SlotRefused::Full);
        drop(held);
        assert_eq!(open.open(), (0, 0));
    }
}
