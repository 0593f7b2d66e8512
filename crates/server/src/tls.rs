//! TLS for SIP (RFC 3261 §26.2: SIP over TLS on its own port, 5061 by convention): the
//! rustls server configuration from a PEM certificate chain and private key named in the
//! configuration. The listener and connections live in `transport`; this is only the
//! key material, loaded once at start so a bad file stops Siphon with a clear error.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// An acceptor for `cert` (PEM, leaf first, then any intermediates) and `key` (PEM,
/// PKCS#8, PKCS#1 or SEC1). Errors name the file and what is wrong with it.
pub fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let bad = |path: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let cert_pem = std::fs::read(cert).map_err(|e| bad(cert, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("bad PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| bad(key, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(key, format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(cert, format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bad_files_are_refused_with_their_name() {
        let dir = std::env::temp_dir().join(format!("siphon-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let missing = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(missing.contains("cert.pem"), "{missing}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let empty = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(empty.contains("no certificate"), "{empty}");
        let signed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, signed.cert.pem()).unwrap();
        let nokey = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(nokey.contains("key.pem"), "{nokey}");
        std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let mismatch = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(mismatch.contains("do not fit"), "{mismatch}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
