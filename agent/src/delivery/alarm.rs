//! Local alarm outputs: severities drive digital outputs (a stack light, a buzzer, a
//! relay to the line's PLC) through `embedded-hal`'s [`OutputPin`], so an alarm is
//! seen on the shop floor even while the network to the central broker is down.
//!
//! ```toml
//! [[alarms]]
//! name = "stack_red"
//! chip = "/dev/gpiochip0"   # Linux GPIO character device
//! line = 17                  # line offset on that chip
//! on = ["critical"]          # severities that switch it on
//! active_low = false         # the output is on when the line is low
//! latch = true               # stays on after the alerts clear, until acknowledged
//! ```
//!
//! An output is on while any active alert has one of its severities; a latching
//! output also stays on after they clear, until `edge-agent alarms ack` (through the
//! control socket). Acknowledging does not silence an alarm whose cause is still
//! there. Outputs are driven from the alert sink thread, in alert order. A line that
//! cannot be driven is logged and retried on the next alert or idle tick; it never
//! holds up the other sinks. On Linux the pins are GPIO character-device lines
//! (`gpiocdev`), requested at start-up with the output off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use edge_models::Severity;
use embedded_hal::digital::OutputPin;

use crate::alert::{Alert, AlertState};
use crate::delivery::sink::AlertSink;

/// One `[[alarms]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmOutputCfg {
    pub name: Arc<str>,
    pub chip: PathBuf,
    pub line: u32,
    pub on: Vec<Severity>,
    pub active_low: bool,
    pub latch: bool,
}

/// What status reports and the ack command share with the sink.
#[derive(Debug, Default)]
pub struct AlarmState {
    pub outputs: Vec<OutputState>,
    /// Bumped by every acknowledgement.
    acks: AtomicU64,
}

#[derive(Debug)]
pub struct OutputState {
    pub name: Arc<str>,
    /// Logically on (the line is driven to its active level).
    pub on: AtomicBool,
    pub latched: AtomicBool,
    /// The line could not be requested or driven.
    pub failed: AtomicBool,
}

impl AlarmState {
    pub fn new(cfgs: &[AlarmOutputCfg]) -> Arc<AlarmState> {
        Arc::new(AlarmState {
            outputs: cfgs
                .iter()
                .map(|c| OutputState {
                    name: c.name.clone(),
                    on: AtomicBool::new(false),
                    latched: AtomicBool::new(false),
                    failed: AtomicBool::new(false),
                })
                .collect(),
            acks: AtomicU64::new(0),
        })
    }

    /// Acknowledges every latched output (applied by the sink thread on its next
    /// alert or idle tick, within about a second).
    pub fn acknowledge(&self) {
        self.acks.fetch_add(1, Ordering::Relaxed);
    }
}

struct Output<P> {
    cfg: AlarmOutputCfg,
    pin: Option<P>,
    latched: bool,
    /// The logical state last written successfully (`None`: never written).
    written: Option<bool>,
}

/// Drives the outputs from the alert stream.
pub struct AlarmSink<P: OutputPin> {
    outputs: Vec<Output<P>>,
    /// Severity of every active (raised, not cleared) alert.
    active: HashMap<(Arc<str>, Arc<str>), Severity>,
    state: Arc<AlarmState>,
    acks_seen: u64,
}

impl<P: OutputPin> std::fmt::Debug for AlarmSink<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlarmSink")
            .field("outputs", &self.outputs.len())
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

impl<P: OutputPin + Send> AlarmSink<P> {
    /// `pins[i]` drives `cfgs[i]`; `None` for a line that could not be requested.
    pub fn new(cfgs: &[AlarmOutputCfg], pins: Vec<Option<P>>, state: Arc<AlarmState>) -> Self {
        let outputs = cfgs
            .iter()
            .cloned()
            .zip(pins)
            .map(|(cfg, pin)| Output {
                cfg,
                pin,
                latched: false,
                written: None,
            })
            .collect();
        let mut sink = AlarmSink {
            outputs,
            active: HashMap::new(),
            state,
            acks_seen: 0,
        };
        sink.apply();
        sink
    }

    fn apply(&mut self) {
        let acks = self.state.acks.load(Ordering::Relaxed);
        let acked = acks != self.acks_seen;
        self.acks_seen = acks;
        for (i, o) in self.outputs.iter_mut().enumerate() {
            let want = self.active.values().any(|s| o.cfg.on.contains(s));
            if acked {
                o.latched = false;
            }
            if o.cfg.latch && want {
                o.latched = true;
            }
            let on = want || o.latched;
            let st = &self.state.outputs[i];
            st.latched.store(o.latched && !want, Ordering::Relaxed);
            if o.written == Some(on) {
                continue;
            }
            let Some(pin) = o.pin.as_mut() else {
                st.failed.store(true, Ordering::Relaxed);
                continue;
            };
            // Electrical level: high when on, unless the output is active-low.
            let high = on != o.cfg.active_low;
            let r = if high { pin.set_high() } else { pin.set_low() };
            match r {
                Ok(()) => {
                    if o.written.is_some() || on {
                        tracing::info!(output = %o.cfg.name, on, "alarm output switched");
                    }
                    o.written = Some(on);
                    st.on.store(on, Ordering::Relaxed);
                    st.failed.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    if !st.failed.swap(true, Ordering::Relaxed) {
                        tracing::error!(output = %o.cfg.name, error = ?e, "cannot drive the alarm output; retrying");
                    }
                }
            }
        }
    }
}

impl<P: OutputPin + Send> AlertSink for AlarmSink<P> {
    fn name(&self) -> &str {
        "alarm outputs"
    }

    fn deliver(&mut self, alert: &Alert) -> std::io::Result<()> {
        let key = (alert.asset.clone(), alert.detector.clone());
        match alert.state {
            AlertState::Raised => {
                self.active.insert(key, alert.severity);
            }
            AlertState::Cleared => {
                self.active.remove(&key);
            }
        }
        self.apply();
        Ok(())
    }

    /// Called when the queue is idle (at least every second): applies
    /// acknowledgements and retries failed lines.
    fn flush(&mut self) -> std::io::Result<()> {
        self.apply();
        Ok(())
    }
}

/// Requests the configured lines as outputs, off. A line that cannot be requested
/// is logged and left out (the others still work; status shows it as failed).
#[cfg(feature = "gpio")]
pub fn linux_pins(cfgs: &[AlarmOutputCfg]) -> Vec<Option<gpiocdev_embedded_hal::OutputPin>> {
    use embedded_hal::digital::PinState;
    cfgs.iter()
        .map(|c| {
            let off = if c.active_low {
                PinState::High
            } else {
                PinState::Low
            };
            match gpiocdev_embedded_hal::OutputPin::new(&c.chip, c.line, off) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(
                        output = %c.name, chip = %c.chip.display(), line = c.line, error = %e,
                        "cannot request the GPIO line for the alarm output (in use, or no such line? see `gpioinfo`)"
                    );
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertId, system_alert};
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    fn cfg(name: &str, on: &[Severity], active_low: bool, latch: bool) -> AlarmOutputCfg {
        AlarmOutputCfg {
            name: name.into(),
            chip: "/dev/gpiochip0".into(),
            line: 17,
            on: on.to_vec(),
            active_low,
            latch,
        }
    }

    fn alert(det: &str, severity: Severity, state: AlertState) -> Alert {
        let id = AlertId(1);
        system_alert(
            &Arc::from("pump1"),
            id,
            id,
            det,
            severity,
            state,
            String::new(),
            Default::default(),
        )
    }

    #[test]
    fn an_output_follows_its_severities_and_active_low_inverts_the_line() {
        let cfgs = [
            cfg("red", &[Severity::Critical], false, false),
            cfg(
                "amber",
                &[Severity::Warning, Severity::PreFault],
                true,
                false,
            ),
        ];
        let red = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let amber = Mock::new(&[
            Transaction::set(State::High), // off, active-low
            Transaction::set(State::Low),  // on
            Transaction::set(State::High), // off
        ]);
        let state = AlarmState::new(&cfgs);
        let mut sink = AlarmSink::new(
            &cfgs,
            vec![Some(red.clone()), Some(amber.clone())],
            state.clone(),
        );
        sink.deliver(&alert("temp", Severity::Warning, AlertState::Raised))
            .expect("deliver");
        assert!(state.outputs[1].on.load(Ordering::Relaxed));
        // Escalation to Critical: amber goes off (that alert is Critical now), red on.
        sink.deliver(&alert("temp", Severity::Critical, AlertState::Raised))
            .expect("deliver");
        assert!(state.outputs[0].on.load(Ordering::Relaxed));
        assert!(!state.outputs[1].on.load(Ordering::Relaxed));
        sink.deliver(&alert("temp", Severity::Critical, AlertState::Cleared))
            .expect("deliver");
        assert!(!state.outputs[0].on.load(Ordering::Relaxed));
        let (mut red, mut amber) = (red, amber);
        red.done();
        amber.done();
    }

    #[test]
    fn a_latching_output_stays_on_until_acknowledged_but_not_while_the_cause_remains() {
        let cfgs = [cfg("buzzer", &[Severity::Critical], false, true)];
        let pin = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let state = AlarmState::new(&cfgs);
        let mut sink = AlarmSink::new(&cfgs, vec![Some(pin.clone())], state.clone());
        sink.deliver(&alert("vib", Severity::Critical, AlertState::Raised))
            .expect("deliver");
        // Acknowledged while the alert is still active: stays on.
        state.acknowledge();
        sink.flush().expect("flush");
        assert!(state.outputs[0].on.load(Ordering::Relaxed));
        // Cleared: latched on.
        sink.deliver(&alert("vib", Severity::Critical, AlertState::Cleared))
            .expect("deliver");
        assert!(state.outputs[0].on.load(Ordering::Relaxed));
        assert!(state.outputs[0].latched.load(Ordering::Relaxed));
        // Idle ticks do not release it.
        sink.flush().expect("flush");
        assert!(state.outputs[0].on.load(Ordering::Relaxed));
        // Acknowledged: off.
        state.acknowledge();
        sink.flush().expect("flush");
        assert!(!state.outputs[0].on.load(Ordering::Relaxed));
        assert!(!state.outputs[0].latched.load(Ordering::Relaxed));
        let mut pin = pin;
        pin.done();
    }

    #[test]
    fn a_line_that_fails_is_retried_and_never_blocks_delivery() {
        let cfgs = [cfg("relay", &[Severity::Warning], false, false)];
        let err = embedded_hal_mock::eh1::MockError::Io(std::io::ErrorKind::PermissionDenied);
        let pin = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High).with_error(err),
            Transaction::set(State::High),
        ]);
        let state = AlarmState::new(&cfgs);
        let mut sink = AlarmSink::new(&cfgs, vec![Some(pin.clone())], state.clone());
        assert!(
            sink.deliver(&alert("p", Severity::Warning, AlertState::Raised))
                .is_ok()
        );
        assert!(state.outputs[0].failed.load(Ordering::Relaxed));
        assert!(!state.outputs[0].on.load(Ordering::Relaxed));
        sink.flush().expect("flush");
        assert!(state.outputs[0].on.load(Ordering::Relaxed));
        assert!(!state.outputs[0].failed.load(Ordering::Relaxed));
        let mut pin = pin;
        pin.done();
    }

    #[test]
    fn an_output_whose_line_could_not_be_requested_is_reported_failed() {
        let cfgs = [cfg("red", &[Severity::Critical], false, false)];
        let state = AlarmState::new(&cfgs);
        let mut sink = AlarmSink::<Mock>::new(&cfgs, vec![None], state.clone());
        sink.deliver(&alert("t", Severity::Critical, AlertState::Raised))
            .expect("deliver");
        assert!(state.outputs[0].failed.load(Ordering::Relaxed));
    }
}
