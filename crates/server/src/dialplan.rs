//! Dialplan lookup: which route a dialled Request-URI reaches.

use crate::config::{Config, Route};

/// The user part of a SIP URI (`sip:600@host;params` → `600`), without visual separators.
pub(crate) fn dialled_number(uri: &rsip::Uri) -> Option<String> {
    let user = uri.auth.as_ref()?.user.clone();
    // Visual separators are not part of the number (RFC 3966 §5.1.1).
    let cleaned: String = user.chars().filter(|c| !"-.() ".contains(*c)).collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// The route for a call from `caller` (an account or trunk name, see `Config::route_for`).
pub(crate) fn lookup_for<'c>(
    config: &'c Config,
    uri: &rsip::Uri,
    caller: Option<&str>,
) -> Option<&'c Route> {
    config.route_for(&dialled_number(uri)?, caller)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn finds_routes_by_user_part() {
        let config = Config::embedded().unwrap();
        let uri = rsip::Uri::try_from("sip:600@127.0.0.1:5060;user=phone").unwrap();
        assert_eq!(
            lookup_for(&config, &uri, None).unwrap().number.get_ref(),
            "600"
        );
        let uri = rsip::Uri::try_from("sip:6-0-1@127.0.0.1").unwrap();
        assert_eq!(
            lookup_for(&config, &uri, None).unwrap().number.get_ref(),
            "601"
        );
        let uri = rsip::Uri::try_from("sip:999@127.0.0.1").unwrap();
        assert!(lookup_for(&config, &uri, None).is_none());
        let uri = rsip::Uri::try_from("sip:127.0.0.1").unwrap();
        assert!(lookup_for(&config, &uri, None).is_none());
    }
}
