//! The shipped systemd unit passes `systemd-analyze verify` and keeps its
//! `systemd-analyze security` exposure at or below 2.0 (with and without the RTU
//! drop-in). `tests/run.sh` installs systemd's tools where they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edge-agent-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(repo.join("systemd/edge-agent.service")).expect("unit");
    // verify checks that the executables exist: point them at the test build.
    let unit = unit.replace("/usr/bin/edge-agent", env!("CARGO_BIN_EXE_edge-agent"));
    std::fs::write(dir.join("edge-agent.service"), unit).expect("write unit");
    dir
}

fn analyze(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg("./edge-agent.service")
        .current_dir(dir)
        .output()
        .expect("systemd-analyze runs (tests/run.sh installs the systemd package)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn exposure(dir: &Path) -> f64 {
    let (_, text) = analyze(dir, &["security", "--offline=true", "--no-pager"]);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in\n{text}"));
    let score = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("{line}");
    score
}

#[test]
fn the_unit_verifies_and_its_exposure_stays_at_most_2() {
    let dir = unit_dir("base");
    let (ok, text) = analyze(&dir, &["verify"]);
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    let score = exposure(&dir);
    assert!(score <= 2.0, "exposure {score} > 2.0");

    let _ = std::fs::remove_dir_all(&dir);

    // Each drop-in the README offers keeps the unit valid and within the budget.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dropin in ["rtu.conf", "gpio.conf", "journal.conf"] {
        let dir = unit_dir(dropin);
        let d = dir.join("edge-agent.service.d");
        std::fs::create_dir_all(&d).expect("drop-in dir");
        std::fs::copy(repo.join("systemd").join(dropin), d.join(dropin)).expect("copy");
        let (ok, text) = analyze(&dir, &["verify"]);
        assert!(ok, "verify with {dropin} failed:\n{text}");
        let score = exposure(&dir);
        assert!(score <= 2.0, "exposure with {dropin} {score} > 2.0");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
