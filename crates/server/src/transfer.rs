//! Where a call is transferred to (issue 17 part 2): the target of `POST
//! /api/calls/{id}/transfer` and of a fork's `transfer` command, in the same `to` vocabulary
//! as originate (`user:1002`, `trunk:provider/+15551234567`, `sip:agent@host`). Pure
//! parsing; carrying a transfer out (new leg, re-bridged media with the forks kept) is not
//! built yet.

/// A transfer's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferTarget {
    /// A registered account: its bindings ring.
    User(String),
    /// A number through a configured trunk.
    Trunk { trunk: String, number: String },
    /// A SIP URI, called directly.
    Uri(String),
}

/// Why a `to` value is not a transfer target (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("transfer target is empty")]
    Empty,
    #[error("transfer target must be user:NAME, trunk:TRUNK/NUMBER or sip:URI, not {0:?}")]
    Unknown(String),
}

/// Longest target accepted: more is hostile or a mistake, and it ends up in logs and CDRs.
const MAX_TARGET_LEN: usize = 256;

/// Parses a `to` value.
pub(crate) fn parse_target(to: &str) -> Result<TransferTarget, TargetError> {
    let to = to.trim();
    if to.is_empty() {
        return Err(TargetError::Empty);
    }
    let unknown = || TargetError::Unknown(to.chars().take(64).collect());
    if to.len() > MAX_TARGET_LEN || !to.chars().all(|c| c.is_ascii_graphic()) {
        return Err(unknown());
    }
    let (scheme, rest) = to.split_once(':').ok_or_else(unknown)?;
    match scheme.to_ascii_lowercase().as_str() {
        "user" if !rest.is_empty() && !rest.contains(['@', ':', '/']) => {
            Ok(TransferTarget::User(rest.to_string()))
        }
        "trunk" => match rest.split_once('/') {
            Some((trunk, number)) if !trunk.is_empty() && !number.is_empty() => {
                Ok(TransferTarget::Trunk {
                    trunk: trunk.to_string(),
                    number: number.to_string(),
                })
            }
            _ => Err(unknown()),
        },
        "sip" | "sips" => siphon_sip::refer::parse_refer_to(to)
            .map(|r| TransferTarget::Uri(r.uri))
            .map_err(|_| unknown()),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_three_kinds() {
        assert_eq!(
            parse_target("user:1002"),
            Ok(TransferTarget::User("1002".into()))
        );
        assert_eq!(
            parse_target("trunk:provider/+15551234567"),
            Ok(TransferTarget::Trunk {
                trunk: "provider".into(),
                number: "+15551234567".into()
            })
        );
        assert_eq!(
            parse_target(" sip:agent@10.0.0.5:5070 "),
            Ok(TransferTarget::Uri("sip:agent@10.0.0.5:5070".into()))
        );
    }

    #[test]
    fn bad_targets() {
        assert_eq!(parse_target(""), Err(TargetError::Empty));
        for t in [
            "1002",
            "user:",
            "user:a@b",
            "trunk:provider",
            "trunk:/123",
            "trunk:p/",
            "tel:+1555",
            "sip:",
            "sip:a b@c",
            "user:\u{1F600}",
        ] {
            assert!(parse_target(t).is_err(), "{t:?} accepted");
        }
        assert!(parse_target(&format!("user:{}", "1".repeat(1000))).is_err());
    }
}
