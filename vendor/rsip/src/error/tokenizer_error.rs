use std::{error::Error as StdError, fmt};

/// How much of the rejected input an error message quotes (Siphon patch, PATCHES.md): nom's
/// `alt` builds an error for every alternative it rejects, on the normal path too, and
/// quoting the whole rest of a message made each of them copy it (lossy UTF-8) into a
/// string nobody reads.
const EXCERPT: usize = 64;

fn excerpt<'a>(input: impl Into<&'a bstr::BStr>) -> &'a bstr::BStr {
    let input: &bstr::BStr = input.into();
    let bytes: &[u8] = input.as_ref();
    bytes[..bytes.len().min(EXCERPT)].into()
}

#[derive(Debug, Eq, PartialEq, Clone)]
pub struct TokenizerError {
    pub context: String,
}

impl<'a, S, T> From<(S, T)> for TokenizerError
where
    S: Into<String>,
    T: Into<&'a bstr::BStr>,
{
    fn from(from: (S, T)) -> Self {
        Self {
            context: format!("failed to tokenize {}: {}", from.0.into(), excerpt(from.1)),
        }
    }
}

impl From<&'static str> for TokenizerError {
    fn from(from: &'static str) -> Self {
        Self {
            context: from.into(),
        }
    }
}

#[allow(clippy::from_over_into)]
impl Into<nom::Err<Self>> for TokenizerError {
    fn into(self) -> nom::Err<Self> {
        nom::Err::Error(self)
    }
}

#[allow(clippy::from_over_into)]
impl<'a, T> Into<crate::IResult<'a, T>> for TokenizerError {
    fn into(self) -> crate::IResult<'a, T> {
        Err(nom::Err::Error(self))
    }
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Tokenizer error: {}", self.context)
    }
}

impl StdError for TokenizerError {}

impl<'a, T: Into<&'a bstr::BStr>> nom::error::ParseError<T> for TokenizerError {
    fn from_error_kind(input: T, kind: nom::error::ErrorKind) -> Self {
        Self {
            context: format!("could not tokenize ({:?}): {}", kind, excerpt(input)),
        }
    }
    fn append(input: T, kind: nom::error::ErrorKind, other: Self) -> Self {
        Self {
            context: format!(
                "{}. Also, could not tokenize ({:?}): {}",
                other,
                kind,
                excerpt(input),
            ),
        }
    }

    fn from_char(input: T, c: char) -> Self {
        Self {
            context: format!("was expecting char {} in: {}", c, excerpt(input)),
        }
    }

    fn or(self, other: Self) -> Self {
        Self {
            context: format!("tokenizer error: {} or {}", self, other.context),
        }
    }
}
