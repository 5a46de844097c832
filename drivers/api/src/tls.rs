//! TLS client configuration (rustls with the ring provider only) shared by the
//! uplink and the MQTT sensor driver.

use std::sync::Arc;

use crate::config::TableReader;

/// Reads `password_file` or `password_env` (errors reported on `r`).
pub fn read_password(u: &mut TableReader<'_>) -> Option<String> {
    let pw_file = u.string("password_file");
    let pw_env = u.string("password_env");
    match (&pw_file, &pw_env) {
        (Some(f), Some(_)) => {
            u.error(
                f.span,
                "password_file",
                "set either `password_file` or `password_env`, not both",
            )
            .emit();
            None
        }
        (Some(f), None) => match std::fs::read_to_string(&f.value) {
            Ok(p) => Some(p.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                u.error(f.span, "password_file", format!("cannot read the password file: {e}"))
                    .hint("the file must be readable by the agent's user (e.g. mode 0640, group edge-agent)")
                    .emit();
                None
            }
        },
        (None, Some(v)) => {
            match std::env::var(&v.value) {
                Ok(p) => Some(p),
                Err(_) => {
                    u.error(v.span, "password_env", format!("environment variable `{}` is not set", v.value))
                    .hint("set it in the service environment (systemd: Environment= or EnvironmentFile=)")
                    .emit();
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// Reads `tls`, `ca_file`, `cert_file`, `key_file` and `server_name` and builds the
/// client configuration; `None` for plain TCP (or after reporting an error on `u`).
pub fn read_tls(u: &mut TableReader<'_>) -> Option<Arc<rustls::ClientConfig>> {
    let tls_on = u.bool("tls").map(|v| v.value);
    let ca = u.string("ca_file");
    let cert = u.string("cert_file");
    let key = u.string("key_file");
    let server_name = u.string("server_name");
    let wants_tls =
        tls_on.unwrap_or(ca.is_some() || cert.is_some() || key.is_some() || server_name.is_some());
    if wants_tls {
        match build_tls(
            ca.as_ref().map(|c| std::path::Path::new(c.value.as_str())),
            cert.as_ref()
                .map(|c| std::path::Path::new(c.value.as_str())),
            key.as_ref().map(|c| std::path::Path::new(c.value.as_str())),
            server_name.as_ref().map(|c| c.value.as_str()),
        ) {
            Ok(t) => Some(t),
            Err(msg) => {
                let span = cert
                    .as_ref()
                    .or(ca.as_ref())
                    .or(key.as_ref())
                    .map(|s| s.span)
                    .unwrap_or(u.span());
                u.error(span, "tls", msg)
                    .hint("PEM files readable by the agent's user: ca_file (the broker's CA), cert_file + key_file (mutual TLS)")
                    .emit();
                None
            }
        }
    } else {
        if ca.is_some() || cert.is_some() || key.is_some() {
            u.table_error("TLS files are set but `tls = false`")
                .hint("remove `tls = false`, or the ca_file/cert_file/key_file keys")
                .emit();
        }
        None
    }
}

/// Builds the TLS client configuration: CA certificates from `ca_file` (PEM) or the
/// system's roots, and a client certificate + key (PEM) for mutual TLS.
///
/// `server_name` verifies the broker's certificate against that name instead of the
/// host connected to (e.g. connecting by IP to a broker whose certificate names
/// its DNS name).
pub fn build_tls(
    ca_file: Option<&std::path::Path>,
    cert_file: Option<&std::path::Path>,
    key_file: Option<&std::path::Path>,
    server_name: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            let certs = CertificateDer::pem_file_iter(p)
                .map_err(|e| format!("cannot read CA file {}: {e}", p.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("bad certificate in {}: {e}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("unusable CA certificate in {}: {e}", p.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("no PEM certificates in {}", p.display()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err("no CA certificates found on this system; set `ca_file`".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match server_name {
        None => versions.with_root_certificates(roots),
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| format!("`{name}` is not a valid server name: {e}"))?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS verifier: {e}"))?;
            versions
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedServerName { inner, name }))
        }
    };
    let cfg = match (cert_file, key_file) {
        (Some(c), Some(k)) => {
            let certs = CertificateDer::pem_file_iter(c)
                .map_err(|e| format!("cannot read certificate file {}: {e}", c.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("bad certificate in {}: {e}", c.display()))?;
            if certs.is_empty() {
                return Err(format!("no PEM certificates in {}", c.display()));
            }
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| format!("cannot read private key {}: {e}", k.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key do not work together: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("mutual TLS needs both `cert_file` and `key_file`".into()),
    };
    Ok(Arc::new(cfg))
}

/// Full WebPKI verification, against a configured name instead of the connect host.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
