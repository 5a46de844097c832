//! `opcua`: OPC UA servers (PLCs, SCADA-facing equipment) through async-opcua's
//! client: monitored items in a subscription by default, a polling Read as an
//! option; security policies None, Basic256Sha256, Aes128_Sha256_RsaOaep and
//! Aes256_Sha256_RsaPss with Sign or SignAndEncrypt; anonymous or user/password.
//!
//! ```toml
//! [[drivers]]
//! name = "plc"
//! kind = "opcua"
//! endpoint = "opc.tcp://192.0.2.10:4840"
//! security_policy = "Basic256Sha256"     # None (default) | Basic256Sha256 |
//!                                        # Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss
//! security_mode = "SignAndEncrypt"       # Sign | SignAndEncrypt (None with policy None)
//! username = "edge"
//! password_file = "/etc/edge-agent/opcua.pw"   # or password_env = "OPCUA_PASSWORD"
//! pki_dir = "/var/lib/edge-agent/opcua-pki"    # trusted/ rejected/ own/ private/
//! # certificate = "client.der"; private_key = "client.pem" (else one is made in pki_dir)
//! # application_uri = "urn:edge-agent:plc" (the default; a given certificate must carry it)
//! acquisition = "subscribe"              # subscribe (default) | poll
//! publishing_interval = "1s"             # subscriptions; `poll = "1s"` for polling
//! timeout = "5s"
//! max_items_per_call = 1000              # lowered to the server's operation limit
//!
//! [[drivers.tags]]
//! name = "line1.temp"
//! node = "ns=2;s=Line1.Temp"             # or path = "2:Line1/2:Temp" (from Objects)
//! unit = "°C"
//! sampling = "500ms"                     # default: the publishing interval
//! queue_size = 10
//! deadband = 0.5                         # deadband_type = "absolute" (default) | "percent"
//!
//! [[drivers.tags]]
//! name = "line1.setpoint"
//! node = "ns=2;s=Line1.Setpoint"
//! writable = true                        # written in the node's own type
//! min = 0
//! max = 100
//! verify = true                          # read back after the write
//!
//! [[drivers.tags]]
//! name = "line1.spectrum"                # signals line1.spectrum.0 … .7
//! node = "ns=2;s=Line1.Spectrum"
//! index = 0
//! elements = 8
//! ```
//!
//! A value's source timestamp is its sample time; a Bad or Uncertain status code
//! makes it bad quality with the code (`BadSensorFailure (0x808b)`). A node that
//! does not exist makes that tag bad, not the driver. The session reconnects by
//! itself (re-activating the session, transferring the subscription, or creating
//! it again after a server restart); a value the new subscription repeats is not
//! delivered twice. The server's certificate must be in `pki_dir/trusted` (an
//! unknown one is saved in `pki_dir/rejected` and the error says how to trust
//! it). `edge-agent opcua browse` prints a server's variables as tag entries.

mod client;
mod config;
mod convert;
mod driver;
mod nodes;
mod write;

use std::time::Duration;

pub use config::{
    Acquisition, DEFAULT_PKI_DIR, Deadband, Identity, NodeRef, OpcuaConfig, Policy, Tag,
    split_endpoint,
};
pub use driver::OpcuaFactory;
pub use nodes::{Found, render_tags, signal_name};

/// A status code's upper 16 bits (what a bad sample keeps) as OPC UA names it:
/// `BadNodeIdUnknown (0x8034)`.
pub fn describe_status(code: u16) -> String {
    let status = opcua::types::StatusCode::from((code as u32) << 16);
    format!("{} ({code:#06x})", convert::status_name(status))
}

/// Browses `start` (a NodeId; the Objects folder by default) `depth` levels
/// down on the server `cfg` names, with its security and credentials.
pub async fn browse(
    cfg: &OpcuaConfig,
    start: Option<&str>,
    depth: u32,
) -> Result<Vec<Found>, String> {
    let start: opcua::types::NodeId = match start {
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a NodeId (e.g. \"ns=2;s=Line1\" or \"i=85\")"))?,
        None => opcua::types::ObjectId::ObjectsFolder.into(),
    };
    let c = client::build_client(cfg).map_err(|e| e.message)?;
    let (session, events) = client::open(&c, cfg).await.map_err(|e| e.message)?;
    let handle = events.spawn();
    let connected = tokio::time::timeout(cfg.timeout * 3, session.wait_for_connection()).await;
    if !matches!(connected, Ok(true)) {
        handle.abort();
        return Err(format!(
            "{}: no session within {:?}",
            cfg.endpoint,
            cfg.timeout * 3
        ));
    }
    let r = tokio::time::timeout(
        Duration::from_secs(120),
        nodes::browse(&session, &start, depth),
    )
    .await
    .map_err(|_| "browsing took longer than 2 minutes".to_string())
    .and_then(|r| r);
    let _ = tokio::time::timeout(Duration::from_secs(1), session.disconnect()).await;
    handle.abort();
    r
}

/// A configuration for browsing an endpoint without a config file: no
/// security, anonymous.
pub fn anonymous(endpoint: &str) -> Result<OpcuaConfig, String> {
    let (host, port) = split_endpoint(endpoint)?;
    Ok(OpcuaConfig {
        name: "browse".into(),
        endpoint: endpoint.to_string(),
        host,
        port,
        policy: Policy::None,
        mode: opcua::types::MessageSecurityMode::None,
        identity: Identity::Anonymous,
        application_uri: config::default_application_uri("browse"),
        certificate: None,
        private_key: None,
        pki_dir: std::env::temp_dir().join("edge-agent-opcua-browse"),
        acquisition: Acquisition::Subscribe,
        publishing_interval: Duration::from_secs(1),
        poll: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        max_items_per_call: 1000,
        health: edge_driver_api::health::HealthConfig::defaults(
            Duration::from_secs(1),
            Duration::from_secs(5),
        ),
        tags: Vec::new(),
        span: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_codes_are_named() {
        assert_eq!(super::describe_status(0x8034), "BadNodeIdUnknown (0x8034)");
        assert_eq!(super::describe_status(0x808C), "BadSensorFailure (0x808c)");
    }
}
