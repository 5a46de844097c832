//! Modbus TCP read throughput of the real driver on one core (a current-thread
//! runtime), against a fast server in a child process (a minimal blocking responder,
//! so the server is not the bottleneck): 1,000 u16 holding registers as 1,000 tags,
//! with coalescing (8 requests per cycle) and without (1,000 requests per cycle).
//!
//!     cargo bench -p edge-agent-tests --bench modbus_read
//!
//! Reports tags/s and the bench process's CPU seconds per 1,000 tags (every
//! thread's, from /proc/self/task/*/schedstat; the server's CPU is not included).
//! Compare the two lines of one run: these machines are noisy.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use edge_agent_tests::bench::run_driver;
use edge_driver_api::SignalRegistry;
use edge_driver_api::config::{Diagnostics, TableReader, parse_document};
use edge_driver_modbus::ModbusConfig;

const SECONDS: f64 = 3.0;
const TAGS: u16 = 1000;

/// Answers every read-holding/input-registers request with `count` registers.
fn serve(port: u16) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut req = [0u8; 12];
            let mut out = Vec::with_capacity(300);
            while s.read_exact(&mut req).is_ok() {
                let count = u16::from_be_bytes([req[10], req[11]]);
                let start = u16::from_be_bytes([req[8], req[9]]);
                out.clear();
                out.extend_from_slice(&req[..4]);
                out.extend_from_slice(&(3 + 2 * count).to_be_bytes());
                out.extend_from_slice(&[req[6], req[7], (2 * count) as u8]);
                for i in 0..count {
                    out.extend_from_slice(&start.wrapping_add(i).to_be_bytes());
                }
                if s.write_all(&out).is_err() {
                    return;
                }
            }
        });
    }
}

fn measure(port: u16, coalesce: bool) -> (f64, f64, usize) {
    let mut toml =
        format!("host = \"127.0.0.1\"\nport = {port}\npoll = \"1ms\"\ntimeout = \"1s\"\n");
    if !coalesce {
        toml += "max_registers = 1\nmax_gap = 0\n";
    }
    for i in 0..TAGS {
        toml += &format!("[[tags]]\nname = \"t{i}\"\narea = \"holding\"\naddress = {i}\n");
    }
    let table = parse_document(&toml).expect("toml");
    let diags = Diagnostics::new();
    let cfg = {
        let mut r = TableReader::new(&table, "drivers[0]", &diags);
        ModbusConfig::parse(&mut r, "bench").expect("config")
    };
    let requests = cfg.request_counts().1;
    let mut reg = SignalRegistry::new();
    for d in cfg.signals() {
        reg.intern(&d, "bench").expect("unique");
    }
    let f = cfg.into_factory(&reg).expect("factory");
    let (rate, cpu) = run_driver(Arc::new(f), u32::from(TAGS), u64::from(TAGS), SECONDS);
    (rate, cpu, requests)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(args[i + 1].parse().expect("port"));
        return;
    }
    let port = edge_agent_tests::free_port();
    let mut server = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--serve", &port.to_string()])
        .spawn()
        .expect("start the server");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("modbus_read: {TAGS} u16 tags, poll 1ms, {SECONDS} s each, one core");
    let mut base = 0.0;
    for coalesce in [false, true] {
        let (rate, cpu, requests) = measure(port, coalesce);
        if !coalesce {
            base = rate;
        }
        println!(
            "coalescing {:>3}: {requests:>4} requests/cycle, {rate:>10.0} tags/s, {:.2} ms CPU per 1000 tags, ratio {:.1}",
            if coalesce { "on" } else { "off" },
            cpu * 1e3,
            rate / base
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
