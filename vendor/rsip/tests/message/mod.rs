pub mod has_headers;
pub mod message;
pub mod request;
pub mod response;
