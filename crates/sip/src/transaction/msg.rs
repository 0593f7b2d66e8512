//! Header access tolerant of what real peers send.
//!
//! rsip does not know the RFC 3261 §7.3.3 compact forms (`v:`, `i:`, `f:`, `t:`) and files
//! them under `Header::Other`; matching must still work for peers that use them, so every
//! lookup here checks both spellings.

use rsip::prelude::*;
use rsip::{Header, Headers};

use super::TransactionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Via,
    CallId,
    From,
    To,
    CSeq,
}

impl Field {
    fn compact(self) -> Option<&'static str> {
        match self {
            Field::Via => Some("v"),
            Field::CallId => Some("i"),
            Field::From => Some("f"),
            Field::To => Some("t"),
            Field::CSeq => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::Via => "Via",
            Field::CallId => "Call-ID",
            Field::From => "From",
            Field::To => "To",
            Field::CSeq => "CSeq",
        }
    }

    fn missing(self) -> TransactionError {
        match self {
            Field::Via => TransactionError::MissingVia,
            Field::CallId => TransactionError::MissingCallId,
            Field::From => TransactionError::MissingFrom,
            Field::To => TransactionError::MissingTo,
            Field::CSeq => TransactionError::MissingCSeq,
        }
    }

    fn malformed(self, source: rsip::Error) -> TransactionError {
        TransactionError::MalformedHeader {
            header: self.name(),
            source,
        }
    }
}

/// The first header of that kind, whichever spelling the peer used.
pub(super) fn first(headers: &Headers, field: Field) -> Option<&Header> {
    headers.iter().find(|h| match (field, h) {
        (Field::Via, Header::Via(_))
        | (Field::CallId, Header::CallId(_))
        | (Field::From, Header::From(_))
        | (Field::To, Header::To(_))
        | (Field::CSeq, Header::CSeq(_)) => true,
        (f, Header::Other(name, _)) => f
            .compact()
            .is_some_and(|c| name.trim().eq_ignore_ascii_case(c)),
        _ => false,
    })
}

/// The raw value of the first header of that kind.
pub(super) fn value(headers: &Headers, field: Field) -> Option<&str> {
    first(headers, field).map(|h| match h {
        Header::Via(v) => v.value(),
        Header::CallId(v) => v.value(),
        Header::From(v) => v.value(),
        Header::To(v) => v.value(),
        Header::CSeq(v) => v.value(),
        Header::Other(_, v) => v.as_str(),
        // `first` only returns the variants above.
        _ => "",
    })
}

pub(super) fn require(headers: &Headers, field: Field) -> Result<&str, TransactionError> {
    value(headers, field).ok_or_else(|| field.missing())
}

/// The topmost Via value. A header line may carry several comma-separated values; rsip's typed
/// parser stops at the first one, which is exactly the one that identifies the transaction.
pub(super) fn top_via(headers: &Headers) -> Result<rsip::typed::Via, TransactionError> {
    let raw = require(headers, Field::Via)?;
    rsip::headers::Via::new(raw)
        .into_typed()
        .map_err(|e| Field::Via.malformed(e))
}

/// The topmost Via as a header of its own, for copying into a generated ACK. The original text
/// is kept when it holds a single value so the ACK carries the Via byte for byte.
pub(super) fn top_via_header(headers: &Headers) -> Result<Header, TransactionError> {
    let raw = require(headers, Field::Via)?;
    if raw.contains(',') {
        Ok(top_via(headers)?.into())
    } else {
        Ok(Header::Via(rsip::headers::Via::new(raw)))
    }
}

pub(super) fn cseq(headers: &Headers) -> Result<rsip::typed::CSeq, TransactionError> {
    let raw = require(headers, Field::CSeq)?;
    rsip::headers::CSeq::new(raw)
        .into_typed()
        .map_err(|e| Field::CSeq.malformed(e))
}

pub(super) fn call_id(headers: &Headers) -> Result<&str, TransactionError> {
    require(headers, Field::CallId).map(str::trim)
}

/// The `tag` parameter of From or To, if any.
///
/// Parsed by hand rather than through rsip's typed From/To so that a display name or URI that
/// the typed parser rejects does not lose the tag, which is all matching needs.
pub(super) fn tag(headers: &Headers, field: Field) -> Option<String> {
    let raw = value(headers, field)?;
    // With a name-addr the header parameters follow the closing '>'; with a bare addr-spec
    // every ';' parameter belongs to the header (RFC 3261 §20.10).
    let params = match raw.rfind('>') {
        Some(end) => &raw[end + 1..],
        None => raw,
    };
    params.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| value.trim().to_owned())
    })
}

/// The checks every request the layer handles must pass: the fields used for matching must be
/// present and consistent.
pub(super) fn validate_request(request: &rsip::Request) -> Result<(), TransactionError> {
    let cseq = cseq(&request.headers)?;
    if cseq.method != request.method {
        return Err(TransactionError::CSeqMethodMismatch {
            method: request.method,
            cseq: cseq.method,
        });
    }
    call_id(&request.headers)?;
    Ok(())
}

pub(super) fn status_code(response: &rsip::Response) -> Result<u16, TransactionError> {
    let code = response.status_code.code();
    if (100..=699).contains(&code) {
        Ok(code)
    } else {
        Err(TransactionError::InvalidStatusCode(code))
    }
}

/// What an ACK for a 2xx shares with the INVITE it acknowledges.
///
/// That ACK is its own transaction with a fresh branch (RFC 3261 §13.2.2.4, §17.1.1.3), so it
/// cannot be matched on the branch; it is matched on the dialog instead: Call-ID, the tags,
/// and the INVITE's CSeq number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct AckMatch {
    call_id: String,
    cseq: u32,
    from_tag: Option<String>,
    to_tag: Option<String>,
}

impl AckMatch {
    /// The match for the 2xx `response` sent to `invite`. The To tag comes from the response,
    /// because the TU adds it there.
    pub(super) fn for_2xx(invite: &rsip::Request, response: &rsip::Response) -> Option<Self> {
        Some(AckMatch {
            call_id: call_id(&invite.headers).ok()?.to_owned(),
            cseq: cseq(&invite.headers).ok()?.seq,
            from_tag: tag(&invite.headers, Field::From),
            to_tag: tag(&response.headers, Field::To),
        })
    }

    pub(super) fn for_ack(ack: &rsip::Request) -> Option<Self> {
        Some(AckMatch {
            call_id: call_id(&ack.headers).ok()?.to_owned(),
            cseq: cseq(&ack.headers).ok()?.seq,
            from_tag: tag(&ack.headers, Field::From),
            to_tag: tag(&ack.headers, Field::To),
        })
    }
}
