//! Keeping secrets out of logs, CDRs, API answers and SIP: fork URLs often carry
//! credentials in their user info (`wss://user:pw@host`) or query (`?token=`), so every
//! place that shows a fork's URL shows [`redact_url`]'s.

/// A URL without user info and query (they often carry credentials).
pub fn redact_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or_default();
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("wss://user:pw@example.com:443/stream?token=abc"),
            "wss://example.com:443/stream"
        );
        assert_eq!(redact_url("ws://127.0.0.1:9"), "ws://127.0.0.1:9");
    }
}
