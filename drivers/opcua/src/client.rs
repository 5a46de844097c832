//! The session: the client's certificate store, endpoint selection, identity,
//! and what a failure means to the operator.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::DriverError;
use opcua::client::transport::TcpConnector;
use opcua::client::{Client, ClientBuilder, IdentityToken, Session, SessionEventLoop};
use opcua::crypto::{CertificateStore, SecurityPolicy, X509};
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode};

use crate::config::{Identity, OpcuaConfig, Policy};

/// The client of one driver: its application identity and certificate store.
pub fn build_client(cfg: &OpcuaConfig) -> Result<Client, DriverError> {
    let secure = cfg.policy != Policy::None;
    // The stack keeps a certificate store even for sessions without security; it
    // then lives in the temporary directory, so that an unsecured driver never
    // creates `pki_dir` (nor needs write access there).
    let pki_dir = if secure {
        prepare_pki(&cfg.pki_dir)?;
        cfg.pki_dir.clone()
    } else {
        std::env::temp_dir().join("edge-agent-opcua-none")
    };
    let mut b = ClientBuilder::new()
        .application_name("edge-agent")
        .application_uri(cfg.application_uri.clone())
        .product_uri("urn:edge-agent")
        .pki_dir(pki_dir)
        // Servers are trusted only through `pki_dir/trusted`.
        .trust_server_certs(false)
        .verify_server_certs(true)
        .create_sample_keypair(secure && cfg.certificate.is_none())
        // The session reconnects by itself (re-activation, subscription transfer or
        // re-creation) for as long as the driver runs; a few seconds at most
        // between attempts so a restarted server is back within seconds.
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(200))
        .session_retry_max(Duration::from_secs(2))
        .keep_alive_interval(Duration::from_secs(5))
        .max_failed_keep_alive_count(2)
        .request_timeout(cfg.timeout)
        .publish_timeout(cfg.timeout.max(cfg.publishing_interval * 3))
        .recreate_subscriptions(true)
        .session_timeout(60_000)
        .session_name(format!("edge-agent {}", cfg.name));
    if let (Some(c), Some(k)) = (&cfg.certificate, &cfg.private_key) {
        b = b.certificate_path(c.clone()).private_key_path(k.clone());
    }
    b.client()
        .map_err(|e| DriverError::config(format!("OPC UA client settings: {}", e.join("; "))))
}

/// Creates the store's directories and names every certificate in `trusted/`
/// the way the stack looks for it (`<CN> [<thumbprint>].der`), so that an
/// operator may drop a server's certificate there under any name; a trusted
/// certificate is taken out of `rejected/`.
fn prepare_pki(dir: &Path) -> Result<(), DriverError> {
    let trusted = dir.join("trusted");
    for sub in ["trusted", "rejected", "own", "private"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
            DriverError::fatal(format!(
                "cannot create the OPC UA certificate store {}: {e}",
                dir.join(sub).display()
            ))
        })?;
    }
    let Ok(entries) = std::fs::read_dir(&trusted) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(cert) = CertificateStore::read_cert(&path) else {
            tracing::warn!(file = %path.display(), "not a certificate; ignored in the OPC UA trust store");
            continue;
        };
        let file_name = CertificateStore::cert_file_name(&cert);
        // Trusting a certificate the store once rejected: the rejection goes.
        let _ = std::fs::remove_file(dir.join("rejected").join(&file_name));
        let canonical = trusted.join(file_name);
        if canonical != path
            && !canonical.exists()
            && let Ok(der) = cert.to_der()
            && let Err(err) = std::fs::write(&canonical, der)
        {
            tracing::warn!(file = %canonical.display(), error = %err, "cannot add a trusted certificate");
        }
    }
    Ok(())
}

/// A session on the configured endpoint, not yet connected: its event loop
/// connects when polled. Fails when the server cannot be asked for its endpoints
/// or offers none with the configured policy and mode.
pub async fn open(
    client: &Client,
    cfg: &OpcuaConfig,
) -> Result<(Arc<Session>, SessionEventLoop<TcpConnector>), DriverError> {
    let endpoints = tokio::time::timeout(
        cfg.timeout,
        client.get_server_endpoints_from_url(cfg.endpoint.as_str()),
    )
    .await
    .map_err(|_| {
        DriverError::transient(format!(
            "{}: no answer to GetEndpoints within {:?}",
            cfg.endpoint, cfg.timeout
        ))
    })?
    .map_err(|e| classify(cfg, e.status(), &e.to_string()))?;
    let policy = cfg
        .policy
        .stack_name()
        .parse()
        .unwrap_or(SecurityPolicy::Unknown);
    let Some(matching) =
        Client::find_matching_endpoint(&endpoints, &cfg.endpoint, policy, cfg.mode)
    else {
        return Err(DriverError::device(format!(
            "{} offers no endpoint with security policy {} and mode {:?}; it offers: {}",
            cfg.endpoint,
            cfg.policy.name(),
            cfg.mode,
            offered(&endpoints)
        )));
    };
    if cfg.policy != Policy::None {
        check_trusted(cfg, &matching.server_certificate)?;
    }
    let wanted: EndpointDescription =
        (cfg.endpoint.as_str(), cfg.policy.stack_name(), cfg.mode).into();
    client
        .session_builder()
        .with_endpoints(endpoints)
        .connect_to_matching_endpoint(wanted)
        .and_then(|b| {
            b.user_identity_token(identity(&cfg.identity))
                .build(client.certificate_store().clone())
        })
        .map_err(|e| classify(cfg, e.status(), &e.to_string()))
}

/// Refuses a server whose certificate is not in `pki_dir/trusted`, before any
/// session: the certificate is saved in `pki_dir/rejected` and the error says
/// how to trust it (the stack would refuse it too, but after the first time only
/// with "security checks failed").
fn check_trusted(cfg: &OpcuaConfig, der: &opcua::types::ByteString) -> Result<(), DriverError> {
    let ep = &cfg.endpoint;
    let cert = X509::from_byte_string(der)
        .map_err(|e| DriverError::device(format!("{ep} sent no usable certificate: {e}")))?;
    let name = CertificateStore::cert_file_name(&cert);
    if cfg.pki_dir.join("trusted").join(&name).exists() {
        return Ok(());
    }
    let rejected = cfg.pki_dir.join("rejected").join(&name);
    if !rejected.exists()
        && let Err(e) = std::fs::write(&rejected, der.as_ref())
    {
        tracing::warn!(file = %rejected.display(), error = %e, "cannot save a rejected certificate");
    }
    Err(DriverError::device(format!(
        "the server certificate of {ep} is not trusted; it was saved as {}: if it is the right server, move it to {} (the driver retries by itself)",
        rejected.display(),
        cfg.pki_dir.join("trusted").display()
    )))
}

/// What a server offers, for error messages: `None/None, Basic256Sha256/SignAndEncrypt`.
fn offered(endpoints: &[EndpointDescription]) -> String {
    let v: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let p = SecurityPolicy::from_uri(e.security_policy_uri.as_ref());
            format!("{}/{:?}", p.to_str(), e.security_mode)
        })
        .collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

fn identity(id: &Identity) -> IdentityToken {
    match id {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::User { name, password } => {
            IdentityToken::new_user_name(name.clone(), password.clone())
        }
    }
}

/// A connection failure as the supervisor and the operator need it: what went
/// wrong and what to do, with a retryable kind (an operator can fix trust and
/// credentials without restarting the agent).
pub fn classify(cfg: &OpcuaConfig, code: StatusCode, detail: &str) -> DriverError {
    let ep = &cfg.endpoint;
    let rejected = cfg.pki_dir.join("rejected");
    let trusted = cfg.pki_dir.join("trusted");
    match code {
        StatusCode::BadCertificateUntrusted => DriverError::device(format!(
            "the server certificate of {ep} is not trusted; it was saved in {}: if it is the right server, move it to {} (the driver retries by itself)",
            rejected.display(),
            trusted.display()
        )),
        StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid
        | StatusCode::BadUserAccessDenied => DriverError::device(format!(
            "{ep} refused the user name or password ({}); check `username` and the password file or variable",
            crate::convert::status_name(code)
        )),
        StatusCode::BadCertificateInvalid
        | StatusCode::BadCertificateUriInvalid
        | StatusCode::BadCertificateHostNameInvalid
        | StatusCode::BadCertificateTimeInvalid
        | StatusCode::BadCertificateUseNotAllowed
        | StatusCode::BadSecurityChecksFailed => DriverError::device(format!(
            "security checks with {ep} failed ({}): {detail}; if the server does not trust this client yet, trust the certificate {} on the server",
            crate::convert::status_name(code),
            client_cert_path(cfg).display()
        )),
        _ => DriverError::transient(format!(
            "{ep}: {} ({detail})",
            crate::convert::status_name(code)
        )),
    }
}

/// Where the client's certificate is (what a server's administrator must trust).
pub fn client_cert_path(cfg: &OpcuaConfig) -> std::path::PathBuf {
    cfg.certificate
        .clone()
        .unwrap_or_else(|| cfg.pki_dir.join("own/cert.der"))
}

/// A security mode's name as the configuration spells it.
pub fn mode_name(m: MessageSecurityMode) -> &'static str {
    match m {
        MessageSecurityMode::Sign => "Sign",
        MessageSecurityMode::SignAndEncrypt => "SignAndEncrypt",
        _ => "None",
    }
}
