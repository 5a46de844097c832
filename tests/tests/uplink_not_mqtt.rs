#![allow(clippy::print_stdout)] // reports what each server got
//! The uplink pointed at something that is not an MQTT broker (a common typo: the
//! web server's port, a TLS port, a firewall that accepts and says nothing): the
//! agent keeps running and keeping its alerts, backs off, and says once, clearly,
//! what is wrong — not a line per retry.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use edge_agent_tests::{TempDir, spawn_agent, spiking_plant_toml};

#[derive(Clone, Copy, Debug)]
enum Peer {
    /// Answers like a web server, then closes.
    Http,
    /// Sends bytes that are no MQTT packet, then keeps the connection.
    Garbage,
    /// Accepts and never says anything.
    Silent,
}

/// A TCP server on 127.0.0.1 behaving like `peer`; counts connections.
fn serve(peer: Peer) -> (u16, Arc<AtomicU32>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let n = Arc::new(AtomicU32::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = [0u8; 512];
                match peer {
                    Peer::Http => {
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                    Peer::Garbage => {
                        let _ = s.read(&mut buf);
                        // A CONNACK-looking type byte with an absurd length, then noise.
                        let _ = s.write_all(&[0x20, 0xff, 0xff, 0xff, 0x7f, 0xde, 0xad]);
                        let _ = s.write_all(&[0xa5; 4096]);
                        std::thread::sleep(Duration::from_secs(30));
                    }
                    Peer::Silent => while matches!(s.read(&mut buf), Ok(n) if n > 0) {},
                }
            });
        }
    });
    (port, n)
}

#[test]
fn an_uplink_to_a_server_that_is_not_mqtt_backs_off_and_says_so_once() {
    for peer in [Peer::Http, Peer::Garbage, Peer::Silent] {
        let (port, connections) = serve(peer);
        let dir = TempDir::new("uplink-not-mqtt");
        let cfg = dir.path().join("agent.toml");
        let log = dir.path().join("agent.log");
        let toml = format!(
            "{}\n[agent]\nid = \"gw\"\ncontrol_socket = \"\"\n[journal]\ndir = \"{}\"\n[uplink]\nhost = \"127.0.0.1\"\nport = {port}\n",
            spiking_plant_toml(1.0, 3600.0),
            dir.path().join("journal").display()
        );
        std::fs::write(&cfg, toml).expect("config");
        let mut agent = spawn_agent(&cfg, &log);
        std::thread::sleep(Duration::from_secs(12));
        let alive = agent.try_wait().expect("wait").is_none();
        let _ = agent.kill();
        let _ = agent.wait();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let uplink_warnings: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("uplink"))
            .collect();
        let n = connections.load(Ordering::SeqCst);
        println!("{peer:?}: {n} connections in 12 s; warnings: {uplink_warnings:#?}");
        assert!(alive, "{peer:?}: the agent kept running\n{text}");
        assert!(!text.contains("panicked"), "{peer:?}:\n{text}");
        // Backoff 0.5, 1, 2, 4 s (jittered): a handful, not one per 100 ms.
        assert!((1..=8).contains(&n), "{peer:?}: {n} connections in 12 s");
        assert_eq!(
            uplink_warnings.len(),
            1,
            "{peer:?}: one line per state change"
        );
        assert!(
            uplink_warnings[0].contains("not an MQTT broker")
                || uplink_warnings[0].contains("did not answer"),
            "{peer:?}: says what is wrong: {}",
            uplink_warnings[0]
        );
    }
}
