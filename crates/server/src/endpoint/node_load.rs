//! What a node tells the load balancer in front of it. Kamailio's dispatcher (and any
//! balancer that probes with OPTIONS) learns from the answer whether to send this node new
//! calls: 200 with the node's load while it takes calls, 503 with Retry-After while it
//! drains or is full, so the edge stops sending it calls *before* one is refused.

use rsip::Header;

/// The header of a 200 to OPTIONS naming the node's load (docs/scaling.md):
/// `X-Siphon-Load: calls=12; capacity=2000`.
pub(super) const LOAD_HEADER: &str = "X-Siphon-Load";

/// Retry-After while draining: a drained node is restarted or gone well within this.
pub(super) const DRAIN_RETRY_AFTER_S: u32 = 30;

/// Whether the node takes new calls, as its OPTIONS answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeState {
    Open {
        calls: usize,
        capacity: usize,
    },
    /// SIGTERM came: the node's calls finish, new ones go elsewhere.
    Draining {
        calls: usize,
    },
    /// At `[limits] max_calls`.
    Full {
        calls: usize,
        capacity: usize,
    },
}

impl NodeState {
    pub(super) fn of(draining: bool, calls: usize, capacity: usize) -> NodeState {
        if draining {
            NodeState::Draining { calls }
        } else if calls >= capacity {
            NodeState::Full { calls, capacity }
        } else {
            NodeState::Open { calls, capacity }
        }
    }

    /// The status and reason phrase of the answer to OPTIONS.
    pub(super) fn status(self) -> (u16, Option<&'static str>) {
        match self {
            NodeState::Open { .. } => (200, None),
            NodeState::Draining { .. } => (503, Some("Draining")),
            NodeState::Full { .. } => (503, Some("Too Many Calls")),
        }
    }

    /// The headers the answer carries besides the usual ones: the load, and Retry-After
    /// when the node refuses (RFC 3261 §21.5.4), `full_retry_s` when it is full.
    pub(super) fn headers(self, full_retry_s: u32) -> Vec<Header> {
        let load = |calls: usize, capacity: Option<usize>| {
            let value = match capacity {
                Some(c) => format!("calls={calls}; capacity={c}"),
                None => format!("calls={calls}; draining"),
            };
            Header::Other(LOAD_HEADER.into(), value)
        };
        let retry = |s: u32| Header::Other("Retry-After".into(), s.to_string());
        match self {
            NodeState::Open { calls, capacity } => vec![load(calls, Some(capacity))],
            NodeState::Draining { calls } => vec![load(calls, None), retry(DRAIN_RETRY_AFTER_S)],
            NodeState::Full { calls, capacity } => {
                vec![load(calls, Some(capacity)), retry(full_retry_s)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(h: &Header) -> String {
        match h {
            Header::Other(name, v) => format!("{name}: {v}"),
            other => other.to_string(),
        }
    }

    #[test]
    fn open_node_answers_200_with_its_load() {
        let s = NodeState::of(false, 3, 10);
        assert_eq!(s.status(), (200, None));
        let h: Vec<_> = s.headers(5).iter().map(value).collect();
        assert_eq!(h, vec!["X-Siphon-Load: calls=3; capacity=10"]);
    }

    #[test]
    fn full_node_answers_503_with_retry_after() {
        let s = NodeState::of(false, 10, 10);
        assert_eq!(s.status(), (503, Some("Too Many Calls")));
        let h: Vec<_> = s.headers(5).iter().map(value).collect();
        assert_eq!(
            h,
            vec!["X-Siphon-Load: calls=10; capacity=10", "Retry-After: 5"]
        );
    }

    #[test]
    fn draining_wins_over_load() {
        let s = NodeState::of(true, 0, 10);
        assert_eq!(s.status(), (503, Some("Draining")));
        let h: Vec<_> = s.headers(5).iter().map(value).collect();
        assert_eq!(
            h,
            vec!["X-Siphon-Load: calls=0; draining", "Retry-After: 30"]
        );
    }
}
