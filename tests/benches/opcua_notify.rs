//! OPC UA subscription throughput of the real driver on one core (a
//! current-thread runtime) against FreeOpcUa's asyncua server: 1,000 monitored
//! items, all changed by the server every 200 ms, published every 100 ms. Beside
//! it, in the same run, the Modbus driver reading 1,000 u16 registers from
//! pymodbus (coalesced, as fast as the server answers): the per-core figure of a
//! polling driver.
//!
//!     cargo bench -p edge-agent-tests --bench opcua_notify
//!
//! The servers are Python and slower than the driver, so the rates say what they
//! delivered; the per-core figure is values delivered per CPU second of the bench
//! process (every thread's time on a CPU, from /proc/self/task/*/schedstat: the
//! driver, the OPC UA stack and the sink; the servers' CPU is not included). Compare the lines of one run.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::sync::Arc;

use edge_agent_tests::bench::run_driver;
use edge_agent_tests::{PyModbus, PyOpcua};
use edge_driver_api::config::{Diagnostics, TableReader, parse_document};
use edge_driver_api::{DriverFactory, SignalRegistry};

const SECONDS: f64 = 20.0;
const ITEMS: u32 = 1000;

fn measure(f: Arc<dyn DriverFactory>, warmup: u64) -> (f64, f64) {
    run_driver(f, ITEMS, warmup, SECONDS)
}

fn parse<C>(toml: &str, parse: impl FnOnce(&mut TableReader<'_>) -> Option<C>) -> C {
    let table = parse_document(toml).expect("toml");
    let diags = Diagnostics::new();
    let mut r = TableReader::new(&table, "drivers[0]", &diags);
    parse(&mut r).expect("config")
}

fn opcua(endpoint: &str) -> Arc<dyn DriverFactory> {
    let mut toml =
        format!("endpoint = \"{endpoint}\"\npublishing_interval = \"100ms\"\ntimeout = \"5s\"\n");
    for i in 0..ITEMS {
        toml += &format!(
            "[[tags]]\nname = \"t{i}\"\nnode = \"ns=2;s=Bench.{i}\"\nsampling = \"100ms\"\nqueue_size = 1\n"
        );
    }
    let cfg = parse(&toml, |r| edge_driver_opcua::OpcuaConfig::parse(r, "bench"));
    let mut reg = SignalRegistry::new();
    for d in cfg.signals() {
        reg.intern(&d, "bench").expect("unique");
    }
    Arc::new(cfg.into_factory(&reg).expect("factory"))
}

fn modbus(port: u16) -> Arc<dyn DriverFactory> {
    let mut toml =
        format!("host = \"127.0.0.1\"\nport = {port}\npoll = \"1ms\"\ntimeout = \"1s\"\n");
    for i in 0..ITEMS {
        toml += &format!("[[tags]]\nname = \"t{i}\"\narea = \"holding\"\naddress = {i}\n");
    }
    let cfg = parse(&toml, |r| {
        edge_driver_modbus::ModbusConfig::parse(r, "bench")
    });
    let mut reg = SignalRegistry::new();
    for d in cfg.signals() {
        reg.intern(&d, "bench").expect("unique");
    }
    Arc::new(cfg.into_factory(&reg).expect("factory"))
}

fn main() {
    println!("opcua_notify: {ITEMS} items, {SECONDS} s each, one core");
    let tags: Vec<serde_json::Value> = (0..ITEMS)
        .map(|i| serde_json::json!({"area": "holding", "address": i, "type": "u16", "value": i}))
        .collect();
    let pm = PyModbus::start(&serde_json::json!({"unit": 1, "tags": tags}));
    let (m_rate, m_cpu) = measure(modbus(pm.port), 5 * u64::from(ITEMS));
    drop(pm);
    let server = PyOpcua::start_with(&["--items", &ITEMS.to_string(), "--period", "200"]);
    let (o_rate, o_cpu) = measure(opcua(&server.endpoint()), 2 * u64::from(ITEMS));
    drop(server);
    for (what, rate, cpu) in [
        ("modbus (pymodbus, polled)", m_rate, m_cpu),
        ("opcua (asyncua, subscribed)", o_rate, o_cpu),
    ] {
        println!(
            "{what:<28} {rate:>9.0} values/s delivered, {:>6.2} ms CPU per 1000, {:>9.0} values per CPU second",
            cpu * 1e3,
            1.0 / cpu * 1000.0
        );
    }
    println!(
        "per core, OPC UA notifications against Modbus tags: {:.2}",
        (1.0 / o_cpu) / (1.0 / m_cpu)
    );
}
