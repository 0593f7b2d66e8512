//! Dialplan number patterns (Asterisk style, the part after `_`): matching a dialled number
//! and checking a pattern when the configuration is loaded. A leaf: imports nothing from
//! the crate.

/// Whether a dialplan pattern (the part after `_`, Asterisk style) is well formed: digits,
/// `+ * #`, `X` (any digit), `Z` (1-9), `N` (2-9), a class `[1-5]` / `[137]`, and at the
/// end `.` (one or more characters) or `!` (zero or more).
pub fn valid_pattern(pattern: &str) -> bool {
    let mut rest = pattern;
    if rest.is_empty() {
        return false;
    }
    while let Some(c) = rest.chars().next() {
        match c {
            '.' | '!' => return rest.len() == 1,
            '[' => match rest.find(']') {
                Some(end) if end > 1 => {
                    let class = &rest[1..end];
                    if !class.chars().all(|c| c.is_ascii_digit() || c == '-') {
                        return false;
                    }
                    rest = &rest[end + 1..];
                    continue;
                }
                _ => return false,
            },
            c if c.is_ascii_digit() || "+*#XZNxzn".contains(c) => {}
            _ => return false,
        }
        rest = &rest[c.len_utf8()..];
    }
    true
}

/// Whether `number` matches a pattern accepted by [`valid_pattern`].
pub fn pattern_matches(pattern: &str, number: &str) -> bool {
    let mut p = pattern;
    let mut n = number.chars();
    loop {
        let Some(pc) = p.chars().next() else {
            return n.next().is_none();
        };
        match pc {
            '.' => return n.next().is_some(),
            '!' => return true,
            '[' => {
                let Some(end) = p.find(']') else {
                    return false;
                };
                let Some(d) = n.next() else {
                    return false;
                };
                if !in_class(&p[1..end], d) {
                    return false;
                }
                p = &p[end + 1..];
                continue;
            }
            _ => {
                let Some(d) = n.next() else {
                    return false;
                };
                let ok = match pc.to_ascii_uppercase() {
                    'X' => d.is_ascii_digit(),
                    'Z' => ('1'..='9').contains(&d),
                    'N' => ('2'..='9').contains(&d),
                    c => c == d,
                };
                if !ok {
                    return false;
                }
            }
        }
        p = &p[pc.len_utf8()..];
    }
}

/// `[1-5]`, `[137]`, `[0-37]`: digits and digit ranges.
fn in_class(class: &str, d: char) -> bool {
    let b = class.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if i + 2 < b.len() && b[i + 1] == b'-' {
            if (char::from(b[i])..=char::from(b[i + 2])).contains(&d) {
                return true;
            }
            i += 3;
        } else {
            if char::from(b[i]) == d {
                return true;
            }
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("1XXX", "1002"));
        assert!(!pattern_matches("1XXX", "10021"));
        assert!(!pattern_matches("1XXX", "100"));
        assert!(pattern_matches("0.", "0044"));
        assert!(!pattern_matches("0.", "0"));
        assert!(pattern_matches("0!", "0"));
        assert!(pattern_matches("N[0-37]Z", "271"));
        assert!(!pattern_matches("N[0-37]Z", "251"));
        assert!(!pattern_matches("N[0-37]Z", "170"));
        assert!(valid_pattern("9X.") && valid_pattern("[1-5]XX!") && valid_pattern("+44X."));
        assert!(!valid_pattern("") && !valid_pattern("9.X") && !valid_pattern("[]1"));
        assert!(!valid_pattern("[1-5") && !valid_pattern("1a"));
    }
}
