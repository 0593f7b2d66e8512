//! SIP extensions named by option tags (RFC 3261 §8.2.2.3, §19.2): which ones Siphon
//! implements, and which of those a request requires that it does not.
//!
//! A UAS must refuse a request whose `Require` names an extension it does not implement
//! (420 Bad Extension, the tags listed in `Unsupported`): going on would break the
//! behaviour the peer depends on (a carrier requiring `100rel` would wait for a PRACK that
//! never comes). It advertises what it does implement in `Supported`, and only that: a
//! peer that reads `timer` in `Supported` expects session refreshes.

/// Option tags Siphon implements in the dialogs it answers (as UAS): `100rel` (RFC 3262
/// reliable provisional responses, see `reliable`) and `timer` (RFC 4028 session timers,
/// either side refreshing; see `session_timer`). Not `replaces` (RFC 3891): a `Require`
/// naming it gets 420.
pub const SUPPORTED_OPTION_TAGS: &[&str] = &["100rel", "timer"];

/// Option tags Siphon implements in the dialogs it starts (as UAC, a bridged call's
/// callee leg): `100rel` (it PRACKs reliable 18x) and `timer` (it refreshes by UPDATE when
/// the callee makes it the refresher, and answers the callee's refreshes).
pub const SUPPORTED_AS_UAC: &[&str] = &["100rel", "timer"];

/// The value of Siphon's `Supported` header in its responses (an empty `Supported` is
/// valid and means none, RFC 3261 §20.37).
pub fn supported_value() -> String {
    SUPPORTED_OPTION_TAGS.join(", ")
}

/// The value of Siphon's `Supported` header in the INVITEs it sends.
pub fn supported_as_uac_value() -> String {
    SUPPORTED_AS_UAC.join(", ")
}

/// The option tags of `require` (the values of every `Require` header, each a
/// comma-separated list) that Siphon does not implement, in order, each once. Option tags
/// compare case-insensitively (they are tokens, RFC 3261 §19.2). Empty tokens (`Require:
/// ,x`) are ignored rather than refused: they name nothing.
pub fn unsupported<'a>(require: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for tag in require
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if tag.is_empty()
            || SUPPORTED_OPTION_TAGS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(tag))
            || missing.iter().any(|m| m.eq_ignore_ascii_case(tag))
        {
            continue;
        }
        missing.push(tag.to_string());
    }
    missing
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_tag_siphon_lacks_is_listed_once_in_order() {
        let got = unsupported(["replaces, 100rel", "precondition,REPLACES", " ,"]);
        assert_eq!(got, ["replaces", "precondition"]);
        assert!(unsupported(["Timer", "100REL"]).is_empty());
    }

    #[test]
    fn no_require_means_nothing_unsupported() {
        assert!(unsupported([]).is_empty());
        assert!(unsupported([""]).is_empty());
    }

    #[test]
    fn supported_names_exactly_the_implemented_tags() {
        let value = supported_value();
        let listed: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(listed, SUPPORTED_OPTION_TAGS);
        // What Siphon says it supports it never refuses.
        assert!(unsupported([value.as_str()]).is_empty());
    }
}
