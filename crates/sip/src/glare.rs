//! Glare (RFC 3261 §14.1): both ends of a dialog sent a re-INVITE (or an UPDATE with an
//! offer, RFC 3311 §5.2) at once. The one that receives the other's while its own is
//! pending answers 491 Request Pending; the one that gets 491 tries again after a random
//! interval: 2.1 to 4 s in 10 ms steps if it owns the dialog's Call-ID (it sent the
//! INVITE that made the dialog), 0 to 2 s in 10 ms steps otherwise, so that the two sides
//! do not collide again. Pure: the caller supplies the randomness.

use std::time::Duration;

/// How long to wait before sending a re-INVITE again after its 491, from a random number
/// `random` (any `u32`): 2100..=4000 ms when Siphon owns the Call-ID, 0..=2000 ms
/// otherwise, multiples of 10 ms.
pub fn retry_delay(owns_call_id: bool, random: u32) -> Duration {
    let (base, steps) = if owns_call_id { (2100, 191) } else { (0, 201) };
    Duration::from_millis(base + 10 * u64::from(random % steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_the_call_id_waits_2_1_to_4_s() {
        assert_eq!(retry_delay(true, 0), Duration::from_millis(2100));
        assert_eq!(retry_delay(true, 190), Duration::from_millis(4000));
        assert_eq!(retry_delay(true, 191), Duration::from_millis(2100));
        for r in [1, 77, 12345, u32::MAX] {
            let d = retry_delay(true, r);
            assert!(d >= Duration::from_millis(2100) && d <= Duration::from_secs(4));
            assert_eq!(d.as_millis() % 10, 0);
        }
    }

    #[test]
    fn the_other_side_waits_0_to_2_s() {
        assert_eq!(retry_delay(false, 0), Duration::ZERO);
        assert_eq!(retry_delay(false, 200), Duration::from_secs(2));
        for r in [1, 77, 12345, u32::MAX] {
            let d = retry_delay(false, r);
            assert!(d <= Duration::from_secs(2));
            assert_eq!(d.as_millis() % 10, 0);
        }
    }
}
