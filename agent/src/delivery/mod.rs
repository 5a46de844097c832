//! Where alerts and events go after the engine: the sink thread ([`sink`]) hands
//! each one to the journal (store-and-forward, [`journal`]), the local alarm outputs
//! ([`alarm`]), the console and JSON-lines files; the [`uplink`] forwards the journal
//! to the central broker, and speaks Sparkplug B for the edge node ([`sparkplug`])
//! when configured. [`wire`] is the one home of every upstream encoding and topic.

pub mod alarm;
pub mod events;
pub mod journal;
pub mod labels;
pub mod recent;
pub mod sink;
pub mod sparkplug;
pub mod uplink;
pub mod wire;
