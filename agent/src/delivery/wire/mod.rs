//! Every upstream encoding and topic in one place.
//!
//! What leaves the gateway is decided here and nowhere else:
//! * [`Envelope`]: a journal record, as stored (postcard) and forwarded: the
//!   message's id, asset, creation time and its encoded body;
//! * [`Topics`]: the topic of every lane and of the retained status;
//! * [`json`]: the JSON documents (schemas in `agent/schema/`): alerts, events,
//!   telemetry summaries and the status message.
//!
//! * [`sparkplug`]: Sparkplug B topics and protobuf payloads (`[sparkplug]`).

pub mod json;
pub mod sparkplug;

use serde::{Deserialize, Serialize};

use super::journal::Lane;

/// What a journal record holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope format version.
    pub v: u8,
    /// The message's unique id (ULID as a number).
    pub id: u128,
    /// For topic routing.
    pub asset: String,
    pub created_wall_ns: i64,
    /// The JSON document to publish.
    pub body: Vec<u8>,
}

impl Envelope {
    /// The current envelope format.
    pub const VERSION: u8 = 1;

    pub fn new(id: u128, asset: &str, created_wall_ns: i64, body: Vec<u8>) -> Envelope {
        Envelope {
            v: Self::VERSION,
            id,
            asset: asset.to_string(),
            created_wall_ns,
            body,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Option<Envelope> {
        postcard::from_bytes(b).ok()
    }
}

/// The topics of one agent: `{prefix}/{agent_id}/status`,
/// `{prefix}/{agent_id}/{alerts|events|telemetry}/{asset}` and
/// `{prefix}/{agent_id}/labels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics<'a> {
    pub prefix: &'a str,
    pub agent_id: &'a str,
}

impl Topics<'_> {
    /// The retained status topic (online / offline, with the last will).
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.agent_id)
    }

    /// Where a record of `lane` about `asset` (or an event's driver) goes. A key
    /// starting with `#` names its topic under the agent's own: labels
    /// ([`crate::delivery::labels::LABELS_KEY`], `#labels`) go to
    /// `{prefix}/{agent_id}/labels`, a command's status (`#cmd/{op}/{id}/status`)
    /// to `{prefix}/{agent_id}/cmd/{op}/{id}/status`. (Asset and driver names
    /// cannot start with `#`.)
    pub fn record(&self, lane: Lane, asset: &str) -> String {
        if let Some(rest) = asset.strip_prefix('#') {
            return format!("{}/{}/{rest}", self.prefix, self.agent_id);
        }
        let kind = match lane {
            Lane::Alert => "alerts",
            Lane::Event => "events",
            Lane::Telemetry => "telemetry",
        };
        format!("{}/{}/{kind}/{asset}", self.prefix, self.agent_id)
    }
}
