//! Errors returned by the transaction layer.
//!
//! Errors are values, never panics: a malformed message from the network must be something the
//! caller can log and answer (typically with a 400) rather than a crash.

use super::TransactionKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// Without a Via there is nothing to match a transaction on, nor anywhere to send a response.
    #[error("message has no Via header")]
    MissingVia,
    /// Responses are matched purely on the branch (RFC 3261 §17.1.3); there is no fallback.
    #[error("top Via header has no branch parameter")]
    MissingBranch,
    /// Requests we originate must use an RFC 3261 branch, so that responses (which can only be
    /// matched on the branch) find their transaction.
    #[error("top Via branch {0:?} does not start with the RFC 3261 magic cookie \"z9hG4bK\"")]
    InvalidBranch(String),
    #[error("message has no CSeq header")]
    MissingCSeq,
    #[error("message has no Call-ID header")]
    MissingCallId,
    /// The layer copies From into the ACK it generates for a non-2xx INVITE response.
    #[error("message has no From header")]
    MissingFrom,
    /// The layer copies the response's To (with its tag) into the ACK for a non-2xx response.
    #[error("message has no To header")]
    MissingTo,
    #[error("malformed {header} header: {source}")]
    MalformedHeader {
        header: &'static str,
        #[source]
        source: rsip::Error,
    },
    /// RFC 3261 §8.1.1.5: the CSeq method must match the request method; a mismatch would let
    /// a response be matched to the wrong transaction kind.
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMethodMismatch {
        method: rsip::Method,
        cseq: rsip::Method,
    },
    #[error("status code {0} is outside 100..=699")]
    InvalidStatusCode(u16),
    /// An ACK never creates a client transaction: the layer ACKs non-2xx responses itself and
    /// the TU sends ACKs for 2xx with `send_ack_for_2xx`.
    #[error("ACK does not start a client transaction")]
    AckNotTransactional,
    #[error("a client transaction {0} already exists")]
    DuplicateTransaction(TransactionKey),
    #[error("unknown transaction {0}")]
    UnknownTransaction(TransactionKey),
    /// The state machine only moves forward: e.g. a second final response, or a provisional
    /// after a final, is a TU bug and is refused rather than sent.
    #[error("transaction {key} in state {state} cannot send a {status} response")]
    InvalidState {
        key: TransactionKey,
        state: &'static str,
        status: u16,
    },
}
