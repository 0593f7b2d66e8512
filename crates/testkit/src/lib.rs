//! Test support shared by the workspace's integration tests (a dev-dependency only).
//!
//! [`private_ca`]: a certificate authority made at test time and a certificate for
//! `localhost` it signed, as a client must trust it (the CA's PEM, e.g. a fork's
//! `tls_ca_file`) and as a server presents it (a ready `TlsAcceptor`).
//!
//! [`SelfSignedCert`]: a self-signed certificate for `localhost` written as PEM files, with
//! the `[sip]` lines that make a Siphon under test listen for SIP over TLS with it.
// Test support: a failure here is a broken test setup, reported as a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA and a server certificate for `localhost` it signed.
pub struct PrivateCa {
    /// The CA's certificate, PEM: what a client trusts.
    pub ca_pem: String,
    /// Serves the `localhost` certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// Makes a new CA and a `localhost` certificate signed by it (fresh keys every call).
pub fn private_ca() -> PrivateCa {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    PrivateCa {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, as `cert.pem` and `key.pem` in
/// a temporary folder of its own (removed when this is dropped).
pub struct SelfSignedCert {
    pub dir: PathBuf,
    /// The certificate, for a client that trusts exactly it.
    pub der: CertificateDer<'static>,
}

impl SelfSignedCert {
    /// `name` keeps the folders of tests running in parallel apart.
    pub fn new(name: &str) -> SelfSignedCert {
        let dir = std::env::temp_dir().join(format!("siphon-cert-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("certificate folder");
        let signed =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("self-signed certificate");
        std::fs::write(dir.join("cert.pem"), signed.cert.pem()).expect("cert.pem");
        std::fs::write(dir.join("key.pem"), signed.signing_key.serialize_pem()).expect("key.pem");
        SelfSignedCert {
            dir,
            der: signed.cert.der().clone(),
        }
    }

    /// The `[sip]` lines that turn TLS on (and end calls at once on stop, as test servers do).
    pub fn config(&self) -> String {
        format!(
            "drain_timeout_s = 0\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            self.dir.join("cert.pem").display(),
            self.dir.join("key.pem").display()
        )
    }
}

impl Drop for SelfSignedCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
