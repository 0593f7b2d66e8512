//! CPU and memory from `/proc`: per process (utime + stime, VmRSS), per core (`/proc/stat`,
//! which includes softirq time: on loopback the sender's core does the receiver's UDP
//! processing), and the kernel's UDP drop counters (`/proc/net/snmp`).

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`): 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, in ticks.
    pub cpu_ticks: u64,
    /// utime alone.
    pub user_ticks: u64,
    pub rss_kb: u64,
    pub at_us: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` if the process is gone.
pub fn sample(pid: u32, at_us: u64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: cpu_ticks_of(&stat)?,
        user_ticks: user_ticks_of(&stat)?,
        rss_kb: rss_kb_of(&status).unwrap_or(0),
        at_us,
    })
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name in
/// parentheses may contain spaces, so fields are counted after the last `)`).
pub fn cpu_ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14 -> index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// utime alone.
pub fn user_ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(11)?.parse().ok()
}

/// VmRSS in kB from `/proc/PID/status`.
pub fn rss_kb_of(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU % (100 = one core) between two samples.
pub fn cpu_percent(a: &ProcSample, b: &ProcSample) -> Option<f64> {
    let wall = b.at_us.checked_sub(a.at_us)? as f64 / 1e6;
    if wall <= 0.0 {
        return None;
    }
    Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / USER_HZ / wall * 100.0)
}

/// User-space CPU % between two samples (the rest is the kernel, which on loopback includes
/// delivering every datagram sent into the receiver's socket).
pub fn user_percent(a: &ProcSample, b: &ProcSample) -> Option<f64> {
    let wall = b.at_us.checked_sub(a.at_us)? as f64 / 1e6;
    if wall <= 0.0 {
        return None;
    }
    Some(b.user_ticks.saturating_sub(a.user_ticks) as f64 / USER_HZ / wall * 100.0)
}

/// Busy and total ticks of each core, from `/proc/stat`.
pub fn cores() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .map(|s| parse_cores(&s))
        .unwrap_or_default()
}

/// `(busy, total)` per `cpuN` line; idle and iowait are not busy.
pub fn parse_cores(stat: &str) -> Vec<(u64, u64)> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Busy % per core between two `cores()` readings.
pub fn core_percent(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let total = y.1.saturating_sub(x.1);
            if total == 0 {
                0.0
            } else {
                y.0.saturating_sub(x.0) as f64 * 100.0 / total as f64
            }
        })
        .collect()
}

/// UDP counters that mean a datagram was dropped on this host.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UdpDrops {
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
    pub in_errors: u64,
}

/// Reads `/proc/net/snmp`.
pub fn udp_drops() -> UdpDrops {
    std::fs::read_to_string("/proc/net/snmp")
        .ok()
        .and_then(|s| parse_udp(&s))
        .unwrap_or_default()
}

/// The `Udp:` header/value line pair of `/proc/net/snmp`.
pub fn parse_udp(snmp: &str) -> Option<UdpDrops> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(UdpDrops {
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
        in_errors: get("InErrors"),
    })
}

impl UdpDrops {
    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &UdpDrops) -> UdpDrops {
        UdpDrops {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
        }
    }
}

/// Sockets bound to a local port in `ports` and their summed `drops` column, from the text of
/// `/proc/net/udp`: how many datagrams the kernel discarded for Siphon's RTP sockets (full
/// receive buffer) while they were open.
pub fn parse_socket_drops(proc_net_udp: &str, ports: std::ops::RangeInclusive<u16>) -> (u64, u64) {
    let mut sockets = 0;
    let mut drops = 0;
    for line in proc_net_udp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(port) = f
            .get(1)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if ports.contains(&port) {
            sockets += 1;
            drops += f.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    (sockets, drops)
}

/// [`parse_socket_drops`] on this host's `/proc/net/udp`.
pub fn socket_drops(ports: std::ops::RangeInclusive<u16>) -> (u64, u64) {
    std::fs::read_to_string("/proc/net/udp")
        .map(|s| parse_socket_drops(&s, ports))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_fields() {
        let s = "1234 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 9 0 100 200 300";
        assert_eq!(cpu_ticks_of(s), Some(280));
        assert_eq!(user_ticks_of(s), Some(250));
        assert_eq!(rss_kb_of("Name:\tx\nVmRSS:\t  10240 kB\n"), Some(10240));
        let a = ProcSample {
            cpu_ticks: 100,
            user_ticks: 50,
            rss_kb: 0,
            at_us: 0,
        };
        let b = ProcSample {
            cpu_ticks: 150,
            user_ticks: 60,
            rss_kb: 0,
            at_us: 1_000_000,
        };
        assert_eq!(cpu_percent(&a, &b), Some(50.0));
        assert_eq!(user_percent(&a, &b), Some(10.0));
    }

    #[test]
    fn cores_and_udp() {
        let s = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 30 10 0 0 0\nintr 1\n";
        assert_eq!(parse_cores(s), vec![(10, 50), (10, 50)]);
        assert_eq!(core_percent(&[(10, 50)], &[(60, 150)]), vec![50.0]);
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 1 7 90 5 2\n";
        assert_eq!(
            parse_udp(snmp),
            Some(UdpDrops {
                rcvbuf_errors: 5,
                sndbuf_errors: 2,
                in_errors: 7
            })
        );
        assert!(sample(std::process::id(), 0).is_some());
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   1: 0100007F:7530 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 3\n\
                   2: 0100007F:7531 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 4\n\
                   3: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 9\n";
        assert_eq!(parse_socket_drops(udp, 30000..=30001), (2, 7));
    }
}
