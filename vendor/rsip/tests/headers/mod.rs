use rsip::headers::UntypedHeader;

pub mod accept;
pub mod alert_info;
pub mod allow;
pub mod auth;
pub mod authentication_info;
pub mod authorization;
pub mod call_info;
pub mod contact;
pub mod content_disposition;
pub mod content_length;
pub mod content_type;
pub mod cseq;
pub mod error_info;
pub mod from;
pub mod in_reply_to;
pub mod max_forwards;
pub mod media_type;
pub mod priority;
pub mod proxy_authenticate;
pub mod record_route;
pub mod reply_to;
pub mod to;
pub mod tokenizers;
pub mod via;
pub mod warning;
pub mod www_authenticate;

use rsip::headers::{header::Tokenizer, Accept, Header};

mod display {
    use super::*;

    #[test]
    fn display1() {
        assert_eq!(
            Header::Accept(Accept::new("REGISTER, INVITE")).to_string(),
            String::from("Accept: REGISTER, INVITE")
        );
    }

    #[test]
    fn display2() {
        assert_eq!(
            Header::Other("X-Forward".into(), "202.45.213.14".into()).to_string(),
            String::from("X-Forward: 202.45.213.14")
        );
    }
}

mod tokenizer {
    use super::*;

    #[test]
    fn tokenizer1() {
        assert_eq!(
            Tokenizer::tokenize(b"Accept: REGISTER, INVITE\r\n something"),
            Ok((
                " something".as_bytes(),
                Tokenizer {
                    name: "Accept".as_bytes(),
                    value: "REGISTER, INVITE".as_bytes()
                }
            )),
        );
    }
}

/// `name_and_value` is `Display`'s `name: value` without the formatting, for every header.
mod name_and_value {
    use super::*;

    #[test]
    fn matches_display_for_every_variant() {
        let all = vec![
            Header::Accept(rsip::headers::Accept::new(" a value ; p=1")),
            Header::AcceptEncoding(rsip::headers::AcceptEncoding::new(" a value ; p=1")),
            Header::AcceptLanguage(rsip::headers::AcceptLanguage::new(" a value ; p=1")),
            Header::AlertInfo(rsip::headers::AlertInfo::new(" a value ; p=1")),
            Header::Allow(rsip::headers::Allow::new(" a value ; p=1")),
            Header::AuthenticationInfo(rsip::headers::AuthenticationInfo::new(" a value ; p=1")),
            Header::Authorization(rsip::headers::Authorization::new(" a value ; p=1")),
            Header::CSeq(rsip::headers::CSeq::new(" a value ; p=1")),
            Header::CallId(rsip::headers::CallId::new(" a value ; p=1")),
            Header::CallInfo(rsip::headers::CallInfo::new(" a value ; p=1")),
            Header::Contact(rsip::headers::Contact::new(" a value ; p=1")),
            Header::ContentDisposition(rsip::headers::ContentDisposition::new(" a value ; p=1")),
            Header::ContentEncoding(rsip::headers::ContentEncoding::new(" a value ; p=1")),
            Header::ContentLanguage(rsip::headers::ContentLanguage::new(" a value ; p=1")),
            Header::ContentLength(rsip::headers::ContentLength::new(" a value ; p=1")),
            Header::ContentType(rsip::headers::ContentType::new(" a value ; p=1")),
            Header::Date(rsip::headers::Date::new(" a value ; p=1")),
            Header::ErrorInfo(rsip::headers::ErrorInfo::new(" a value ; p=1")),
            Header::Event(rsip::headers::Event::new(" a value ; p=1")),
            Header::Expires(rsip::headers::Expires::new(" a value ; p=1")),
            Header::From(rsip::headers::From::new(" a value ; p=1")),
            Header::InReplyTo(rsip::headers::InReplyTo::new(" a value ; p=1")),
            Header::MaxForwards(rsip::headers::MaxForwards::new(" a value ; p=1")),
            Header::MimeVersion(rsip::headers::MimeVersion::new(" a value ; p=1")),
            Header::MinExpires(rsip::headers::MinExpires::new(" a value ; p=1")),
            Header::Organization(rsip::headers::Organization::new(" a value ; p=1")),
            Header::Priority(rsip::headers::Priority::new(" a value ; p=1")),
            Header::ProxyAuthenticate(rsip::headers::ProxyAuthenticate::new(" a value ; p=1")),
            Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(" a value ; p=1")),
            Header::ProxyRequire(rsip::headers::ProxyRequire::new(" a value ; p=1")),
            Header::RecordRoute(rsip::headers::RecordRoute::new(" a value ; p=1")),
            Header::ReplyTo(rsip::headers::ReplyTo::new(" a value ; p=1")),
            Header::Require(rsip::headers::Require::new(" a value ; p=1")),
            Header::RetryAfter(rsip::headers::RetryAfter::new(" a value ; p=1")),
            Header::Route(rsip::headers::Route::new(" a value ; p=1")),
            Header::Server(rsip::headers::Server::new(" a value ; p=1")),
            Header::Subject(rsip::headers::Subject::new(" a value ; p=1")),
            Header::SubscriptionState(rsip::headers::SubscriptionState::new(" a value ; p=1")),
            Header::Supported(rsip::headers::Supported::new(" a value ; p=1")),
            Header::Timestamp(rsip::headers::Timestamp::new(" a value ; p=1")),
            Header::To(rsip::headers::To::new(" a value ; p=1")),
            Header::Unsupported(rsip::headers::Unsupported::new(" a value ; p=1")),
            Header::UserAgent(rsip::headers::UserAgent::new(" a value ; p=1")),
            Header::Via(rsip::headers::Via::new(" a value ; p=1")),
            Header::Warning(rsip::headers::Warning::new(" a value ; p=1")),
            Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(" a value ; p=1")),
            Header::Other("X-Custom".into(), "v".into()),
        ];
        for header in all {
            let (name, value) = header.name_and_value();
            assert_eq!(format!("{}: {}", name, value), header.to_string());
        }
    }
}
