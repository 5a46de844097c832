//! Operating a running agent: [`status`] (one snapshot read by the [`control`]
//! socket, the Prometheus [`metrics`] and the web UI, both served by [`http`]), systemd's protocol
//! ([`sdnotify`]), log output ([`logging`]) and the start-up code trim ([`memory`]).

pub mod control;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
#[cfg(feature = "opcua")]
pub mod opcua;
pub mod sdnotify;
pub mod status;
pub mod tags;
