//! One declaration per component's counters.
//!
//! [`counters!`](crate::counters!) declares, from one list, the live struct of atomics that
//! a component bumps, a plain `Copy` snapshot of it (what `status` serialises and
//! the stats log prints), and each counter's Prometheus name, type and help (the
//! doc comment). Renaming or adding a counter is one line here plus the code that
//! bumps it: status, metrics and the stats log read the same fields.
//!
//! ```ignore
//! counters! {
//!     /// Counters of the processor.
//!     pub struct PipelineCounters => PipelineSnapshot {
//!         /// Samples the pipeline processed.
//!         samples: counter "pipeline_samples_total",
//!     }
//!     extra {
//!         /// Not a number to report: read by the watchdog only.
//!         pub heartbeat: AtomicU64,
//!     }
//! }
//! ```

/// The Prometheus type of a reported value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One reported value of a snapshot: its metric name (without the `edge_agent_`
/// prefix), type, help and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub value: u64,
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_kind {
    (counter) => {
        $crate::counters::MetricKind::Counter
    };
    (gauge) => {
        $crate::counters::MetricKind::Gauge
    };
}

/// Declares a live counters struct, its snapshot and their metrics (see the
/// module's documentation).
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $live:ident => $snap:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $kind:ident $metric:literal, )*
        }
        $( extra { $( $(#[$xmeta:meta])* pub $xfield:ident : $xty:ty, )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $live {
            $( $(#[doc = $doc])* pub $field: std::sync::atomic::AtomicU64, )*
            $( $( $(#[$xmeta])* pub $xfield: $xty, )* )?
        }

        #[doc = concat!("A copy of [`", stringify!($live), "`]'s numbers at one instant.")]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $snap {
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        impl $live {
            /// Every number, now.
            pub fn snapshot(&self) -> $snap {
                $snap {
                    $( $field: self.$field.load(std::sync::atomic::Ordering::Relaxed), )*
                }
            }
        }

        impl $snap {
            /// Every number with its metric name, type and help.
            pub fn metrics(&self) -> Vec<$crate::counters::Metric> {
                vec![ $( $crate::counters::Metric {
                    name: $metric,
                    kind: $crate::__counter_kind!($kind),
                    help: concat!($($doc),*),
                    value: self.$field,
                }, )* ]
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    crate::counters! {
        /// Test counters.
        pub struct Live => Snap {
            /// Things seen,
            /// over two lines.
            seen: counter "things_seen_total",
            /// Things in hand.
            held: gauge "things_held",
        }
        extra {
            /// Not reported.
            pub beat: AtomicU64,
        }
    }

    #[test]
    fn a_snapshot_and_its_metrics_read_the_same_fields() {
        let c = Live::default();
        c.seen.fetch_add(3, Ordering::Relaxed);
        c.held.fetch_add(2, Ordering::Relaxed);
        c.beat.fetch_add(9, Ordering::Relaxed);
        let s = c.snapshot();
        assert_eq!((s.seen, s.held), (3, 2));
        let m = s.metrics();
        assert_eq!(m.len(), 2, "extra fields are not reported");
        assert_eq!(m[0].name, "things_seen_total");
        assert_eq!(m[0].kind, super::MetricKind::Counter);
        assert_eq!(m[0].help.trim(), "Things seen, over two lines.");
        assert_eq!(m[1].value, 2);
        assert_eq!(m[1].kind, super::MetricKind::Gauge);
    }

    #[test]
    fn a_snapshot_reads_back_from_json_with_missing_fields_as_zero() {
        let s: Snap = serde_json::from_str(r#"{"seen": 4}"#).expect("parses");
        assert_eq!((s.seen, s.held), (4, 0));
    }
}
