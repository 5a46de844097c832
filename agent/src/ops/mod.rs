//! Operating a running agent: [`status`] (one snapshot read by the [`control`]
//! socket and the Prometheus [`metrics`] endpoint), systemd's protocol
//! ([`sdnotify`]), log output ([`logging`]) and the start-up code trim ([`memory`]).

pub mod control;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod sdnotify;
pub mod status;
pub mod tags;
