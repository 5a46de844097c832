//! Golden tests for configuration errors.
//!
//! Every `tests/config/bad/*.toml` must be rejected with exactly the diagnostics in
//! the `.stderr` file beside it (file:line:col, key path, expected, hint; all errors
//! at once). Regenerate after an intended change with `BLESS=1 cargo test -p edge-agent
//! --test config_golden` and review the diff.
//!
//! The list of detector kinds stands as `<detector kinds>` in the goldens: it is the
//! table in `config/detectors.rs`, so a new kind does not change a golden file.

use std::path::Path;

#[test]
fn every_bad_config_is_rejected_with_its_golden_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/bad");
    let bless = std::env::var_os("BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("bad config dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        // The OPC UA driver is an opt-in feature: without it, its golden would
        // only say that the kind is not in this build.
        .filter(|p| cfg!(feature = "opcua") || !p.to_string_lossy().contains("opcua"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "at least 15 distinct bad configs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = format!(
            "bad/{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name")
        );
        let src = std::fs::read_to_string(path).expect("readable");
        let rendered = match edge_agent::config::parse(&name, &src) {
            Ok(_) => {
                failures.push(format!("{name}: accepted, but it is invalid"));
                continue;
            }
            Err(e) => {
                // Every diagnostic must point somewhere and say how to proceed.
                for d in &e.diagnostics {
                    assert!(
                        d.expected.is_some()
                            || d.hint.is_some()
                            || d.message.starts_with("invalid TOML"),
                        "{name}: diagnostic without expectation or hint: {d:?}"
                    );
                }
                e.rendered.replace(
                    &edge_agent::config::detector_kinds().join(", "),
                    "<detector kinds>",
                )
            }
        };
        let golden = path.with_extension("stderr");
        if bless {
            std::fs::write(&golden, &rendered).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == rendered => {}
            Ok(want) => failures.push(format!(
                "{name}: diagnostics changed\n--- want\n{want}\n--- got\n{rendered}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no golden file; run with BLESS=1\n{rendered}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_multi_error_config_reports_every_problem() {
    let src = include_str!("config/bad/24-several-errors-reported-at-once.toml");
    let err = edge_agent::config::parse("x.toml", src).expect_err("invalid");
    assert_eq!(err.diagnostics.len(), 3, "{}", err.rendered);
}
