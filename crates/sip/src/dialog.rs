//! Dialogs (RFC 3261 §12): the peer-to-peer relationship an INVITE sets up, which every
//! later in-dialog request (ACK for 2xx, BYE, re-INVITE, INFO) is matched against.

use rsip::prelude::*;
use rsip::{Header, Headers};

use crate::message::{header_param, header_values, split_list};

/// What identifies a dialog: Call-ID plus both tags (RFC 3261 §12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a request received by the UAS belongs to (our tag is the To tag).
    pub fn for_incoming(request: &rsip::Request) -> Option<DialogId> {
        let call_id = request.call_id_header().ok()?.value().to_string();
        let local_tag = header_param(request.to_header().ok()?.value(), "tag")?.to_string();
        let remote_tag = header_param(request.from_header().ok()?.value(), "tag")
            .unwrap_or_default()
            .to_string();
        Some(DialogId {
            call_id,
            local_tag,
            remote_tag,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("request lacks {0}")]
    Missing(&'static str),
    #[error("CSeq {got} is lower than the last seen {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
}

impl DialogError {
    /// RFC 3261 §12.2.2: a lower CSeq gets 500; missing pieces are a 400.
    pub fn status(&self) -> u16 {
        match self {
            DialogError::Missing(_) => 400,
            DialogError::CSeqOutOfOrder { .. } => 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// One dialog, from either side: UAS (Siphon answers a call) or UAC (Siphon places the
/// outgoing leg of a bridged call).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    /// Our URI with our tag: the From of requests we send in the dialog.
    pub local_uri: String,
    /// The peer's URI with its tag: the To of requests we send.
    pub remote_uri: String,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Route headers for requests we send (Record-Route of the INVITE, in order, for a UAS).
    pub route_set: Vec<String>,
    /// Next CSeq we use; starts at an arbitrary value (RFC 3261 §8.1.1.5).
    pub local_seq: u32,
    /// Highest CSeq the peer has used.
    pub remote_seq: u32,
}

impl Dialog {
    /// Creates the UAS dialog for an INVITE we answer with a To tag `local_tag`
    /// (RFC 3261 §12.1.1).
    pub fn new_uas(invite: &rsip::Request, local_tag: &str) -> Result<Dialog, DialogError> {
        let call_id = invite
            .call_id_header()
            .map_err(|_| DialogError::Missing("Call-ID"))?
            .value()
            .to_string();
        let from = invite
            .from_header()
            .map_err(|_| DialogError::Missing("From"))?
            .value()
            .to_string();
        let to = invite
            .to_header()
            .map_err(|_| DialogError::Missing("To"))?
            .value()
            .to_string();
        let remote_tag = header_param(&from, "tag").unwrap_or_default().to_string();
        let contact = header_values(&invite.headers, "Contact")
            .into_iter()
            .next()
            .ok_or(DialogError::Missing("Contact"))?;
        let remote_target = uri_of(&contact).ok_or(DialogError::Missing("Contact URI"))?;
        let remote_seq = cseq_number(invite).ok_or(DialogError::Missing("CSeq"))?;
        let route_set = header_values(&invite.headers, "Record-Route")
            .iter()
            .flat_map(|v| split_list(v).map(str::to_string).collect::<Vec<_>>())
            .collect();
        let local_uri = if header_param(&to, "tag").is_some() {
            to
        } else {
            format!("{to};tag={local_tag}")
        };
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_string(),
                remote_tag,
            },
            state: DialogState::Early,
            local_uri,
            remote_uri: from,
            remote_target,
            route_set,
            local_seq: 1,
            remote_seq,
        })
    }

    /// Creates the UAC dialog for an INVITE we sent, from a 2xx (or a provisional with a To
    /// tag) that answered it (RFC 3261 §12.1.2).
    pub fn new_uac(
        invite: &rsip::Request,
        response: &rsip::Response,
    ) -> Result<Dialog, DialogError> {
        let call_id = invite
            .call_id_header()
            .map_err(|_| DialogError::Missing("Call-ID"))?
            .value()
            .to_string();
        let from = invite
            .from_header()
            .map_err(|_| DialogError::Missing("From"))?
            .value()
            .to_string();
        let to = response
            .to_header()
            .map_err(|_| DialogError::Missing("To"))?
            .value()
            .to_string();
        let local_tag = header_param(&from, "tag")
            .ok_or(DialogError::Missing("From tag"))?
            .to_string();
        let remote_tag = header_param(&to, "tag")
            .ok_or(DialogError::Missing("To tag"))?
            .to_string();
        let contact = header_values(&response.headers, "Contact")
            .into_iter()
            .next()
            .ok_or(DialogError::Missing("Contact"))?;
        let remote_target = uri_of(&contact).ok_or(DialogError::Missing("Contact URI"))?;
        let local_seq = cseq_number(invite).ok_or(DialogError::Missing("CSeq"))?;
        // The UAC's route set is the Record-Route of the response, reversed.
        let mut route_set: Vec<String> = header_values(&response.headers, "Record-Route")
            .iter()
            .flat_map(|v| split_list(v).map(str::to_string).collect::<Vec<_>>())
            .collect();
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            state: DialogState::Early,
            local_uri: from,
            remote_uri: to,
            remote_target,
            route_set,
            local_seq,
            remote_seq: 0,
        })
    }

    /// Whether a response to our INVITE belongs to this dialog: its To tag is the one the
    /// dialog was made with. A 2xx with another tag comes from another branch of a forking
    /// proxy (RFC 3261 §13.2.2.4), not a retransmission.
    pub fn answers(&self, response: &rsip::Response) -> bool {
        response
            .to_header()
            .ok()
            .and_then(|to| header_param(to.value(), "tag").map(|t| t == self.id.remote_tag))
            .unwrap_or(false)
    }

    /// Checks and records the CSeq of an in-dialog request (RFC 3261 §12.2.2). ACK and
    /// CANCEL reuse the CSeq of what they refer to and are not checked.
    pub fn on_remote_request(&mut self, request: &rsip::Request) -> Result<(), DialogError> {
        if matches!(request.method, rsip::Method::Ack | rsip::Method::Cancel) {
            return Ok(());
        }
        let seq = cseq_number(request).ok_or(DialogError::Missing("CSeq"))?;
        if seq <= self.remote_seq && self.state != DialogState::Early {
            return Err(DialogError::CSeqOutOfOrder {
                got: seq,
                last: self.remote_seq,
            });
        }
        self.remote_seq = self.remote_seq.max(seq);
        // A target refresh (re-INVITE) may move the peer (RFC 3261 §12.2.2).
        if request.method == rsip::Method::Invite
            && let Some(contact) = header_values(&request.headers, "Contact")
                .into_iter()
                .next()
            && let Some(uri) = uri_of(&contact)
        {
            self.remote_target = uri;
        }
        Ok(())
    }

    /// Builds a request inside the dialog (RFC 3261 §12.2.1.1) — BYE, re-INVITE, INFO.
    /// `via` is the full Via value (transport, sent-by and a fresh branch) chosen by the
    /// transport layer; `contact` is our Contact URI.
    pub fn request(&mut self, method: rsip::Method, via: &str, contact: &str) -> rsip::Request {
        self.local_seq += 1;
        self.build(method, self.local_seq, via, contact)
    }

    /// The ACK for a 2xx to the INVITE that had CSeq `invite_seq` (RFC 3261 §13.2.2.4): it is
    /// built like any in-dialog request but reuses the INVITE's sequence number.
    pub fn ack(&self, invite_seq: u32, via: &str, contact: &str) -> rsip::Request {
        self.build(rsip::Method::Ack, invite_seq, via, contact)
    }

    fn build(&self, method: rsip::Method, seq: u32, via: &str, contact: &str) -> rsip::Request {
        let uri = strip_angle(&self.remote_target);
        let mut headers = Headers::default();
        headers.push(Header::Via(via.into()));
        headers.push(Header::MaxForwards(70.into()));
        headers.push(Header::From(self.local_uri.clone().into()));
        headers.push(Header::To(self.remote_uri.clone().into()));
        headers.push(Header::CallId(self.id.call_id.clone().into()));
        headers.push(Header::CSeq(format!("{seq} {method}").into()));
        for route in &self.route_set {
            headers.push(Header::Route(route.clone().into()));
        }
        headers.push(Header::Contact(format!("<{contact}>").into()));
        headers.push(Header::ContentLength(0.into()));
        let uri = rsip::Uri::try_from(uri.as_str()).unwrap_or_default();
        rsip::Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }
}

/// The CSeq sequence number of a message.
pub fn cseq_number(msg: &impl HeadersExt) -> Option<u32> {
    msg.cseq_header()
        .ok()?
        .value()
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The URI inside a name-addr (`"Bob" <sip:bob@host>;tag=x`) or an addr-spec.
pub fn uri_of(value: &str) -> Option<String> {
    let value = value.trim();
    if let Some(start) = value.find('<') {
        let end = value[start..].find('>')? + start;
        return Some(value[start + 1..end].trim().to_string());
    }
    // addr-spec form: header parameters follow the first ';'
    let uri = value.split(';').next()?.trim();
    (!uri.is_empty()).then(|| uri.to_string())
}

fn strip_angle(uri: &str) -> String {
    uri.trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn invite(cseq: u32, extra: &str) -> rsip::Request {
        let text = format!(
            "INVITE sip:600@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKabc\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@example.com>;tag=ff1\r\n\
             To: <sip:600@127.0.0.1>\r\n\
             Call-ID: call-1\r\n\
             CSeq: {cseq} INVITE\r\n\
             Contact: <sip:alice@192.0.2.10:5070;transport=udp>\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn uas_dialog_from_invite() {
        let d = Dialog::new_uas(
            &invite(5, "Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"),
            "t1",
        )
        .unwrap();
        assert_eq!(d.id.call_id, "call-1");
        assert_eq!(d.id.remote_tag, "ff1");
        assert_eq!(d.id.local_tag, "t1");
        assert_eq!(d.remote_target, "sip:alice@192.0.2.10:5070;transport=udp");
        assert_eq!(d.route_set, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(d.local_uri, "<sip:600@127.0.0.1>;tag=t1");
        assert_eq!(d.remote_seq, 5);
    }

    #[test]
    fn cseq_must_increase_once_confirmed() {
        let mut d = Dialog::new_uas(&invite(5, ""), "t1").unwrap();
        d.state = DialogState::Confirmed;
        assert!(d.on_remote_request(&invite(6, "")).is_ok());
        let err = d.on_remote_request(&invite(6, "")).unwrap_err();
        assert_eq!(err, DialogError::CSeqOutOfOrder { got: 6, last: 6 });
        assert_eq!(err.status(), 500);
    }

    #[test]
    fn bye_is_built_for_the_peer() {
        let mut d = Dialog::new_uas(&invite(5, "Record-Route: <sip:p1;lr>\r\n"), "t1").unwrap();
        let bye = d.request(
            rsip::Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
            "sip:siphon@127.0.0.1:5060",
        );
        let text = bye.to_string();
        assert!(
            text.to_ascii_lowercase()
                .starts_with("bye sip:alice@192.0.2.10:5070;transport=udp sip/2.0"),
            "{text}"
        );
        assert!(text.contains("From: <sip:600@127.0.0.1>;tag=t1"));
        assert!(text.contains("To: \"Alice\" <sip:alice@example.com>;tag=ff1"));
        assert!(text.contains("CSeq: 2 BYE"));
        assert!(text.contains("Route: <sip:p1;lr>"));
    }

    #[test]
    fn uac_dialog_from_2xx_and_its_ack() {
        let inv = invite(1, "");
        let text = "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKabc\r\n\
             From: \"Alice\" <sip:alice@example.com>;tag=ff1\r\n\
             To: <sip:600@127.0.0.1>;tag=bob7\r\n\
             Call-ID: call-1\r\n\
             CSeq: 1 INVITE\r\n\
             Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
             Contact: <sip:bob@192.0.2.20:5080>\r\n\
             Content-Length: 0\r\n\r\n";
        let ok = rsip::Response::try_from(text).unwrap();
        let mut d = Dialog::new_uac(&inv, &ok).unwrap();
        assert_eq!(d.id.local_tag, "ff1");
        assert_eq!(d.id.remote_tag, "bob7");
        assert_eq!(d.route_set, vec!["<sip:p2;lr>", "<sip:p1;lr>"]);
        let via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKy";
        let ack = d.ack(1, via, "sip:siphon@127.0.0.1").to_string();
        assert!(
            ack.starts_with("ACK sip:bob@192.0.2.20:5080 SIP/2.0"),
            "{ack}"
        );
        assert!(ack.contains("CSeq: 1 ACK") && ack.contains("To: <sip:600@127.0.0.1>;tag=bob7"));
        let bye = d
            .request(rsip::Method::Bye, via, "sip:siphon@127.0.0.1")
            .to_string();
        assert!(bye.contains("CSeq: 2 BYE"), "{bye}");
        // A 2xx without a To tag cannot make a dialog.
        let untagged = rsip::Response::try_from(text.replace(";tag=bob7", "").as_str()).unwrap();
        assert_eq!(
            Dialog::new_uac(&inv, &untagged).unwrap_err(),
            DialogError::Missing("To tag")
        );
    }

    #[test]
    fn missing_contact_is_an_error() {
        let text = "INVITE sip:600@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:600@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let req = rsip::Request::try_from(text).unwrap();
        assert_eq!(
            Dialog::new_uas(&req, "t").unwrap_err(),
            DialogError::Missing("Contact")
        );
    }

    fn ok_from(to_tag: &str) -> rsip::Response {
        let text = format!(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKabc\r\n\
             From: \"Alice\" <sip:alice@example.com>;tag=ff1\r\n\
             To: <sip:600@127.0.0.1>;tag={to_tag}\r\n\
             Call-ID: call-1\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:600@192.0.2.20>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        rsip::Response::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn a_2xx_with_another_to_tag_is_another_dialog() {
        let d = Dialog::new_uac(&invite(1, ""), &ok_from("b1")).unwrap();
        assert!(
            d.answers(&ok_from("b1")),
            "a retransmission of the 2xx that won"
        );
        assert!(
            !d.answers(&ok_from("b2")),
            "a forked answer (RFC 3261 §13.2.2.4)"
        );
    }

    #[test]
    fn uri_of_forms() {
        assert_eq!(uri_of("\"B\" <sip:b@h>;tag=1").unwrap(), "sip:b@h");
        assert_eq!(uri_of("sip:b@h;tag=1").unwrap(), "sip:b@h");
        assert_eq!(uri_of("<sip:b@h"), None);
    }
}
