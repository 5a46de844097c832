//! Writes the detection-quality benchmark (`edge_train::scenarios`).
//!
//!     cargo run --release -p edge-train --bin edge-scenarios -- DIR [--seed N] [--subset]
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let mut seed = 1u64;
    let mut subset = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--subset" => subset = true,
            "--seed" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => {
                    eprintln!("error: --seed takes a number");
                    return ExitCode::from(2);
                }
            },
            other if dir.is_none() && !other.starts_with('-') => dir = Some(other.to_string()),
            other => {
                eprintln!(
                    "error: unexpected argument `{other}`\nusage: edge-scenarios DIR [--seed N] [--subset]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: edge-scenarios DIR [--seed N] [--subset]");
        return ExitCode::from(2);
    };
    let all = if subset {
        edge_train::scenarios::subset(seed)
    } else {
        edge_train::scenarios::benchmark(seed)
    };
    if let Err(e) = edge_train::scenarios::write_all(&all, std::path::Path::new(&dir)) {
        eprintln!("error: cannot write the scenarios to {dir}: {e}");
        return ExitCode::from(1);
    }
    let hours: f64 = all.iter().map(|s| s.hours).sum();
    let healthy: f64 = all
        .iter()
        .map(|s| s.onset_s.map_or(s.hours, |o| o / 3600.0))
        .sum();
    println!(
        "{} scenarios ({:.0} h, {:.0} healthy h) written to {dir} (seed {seed})",
        all.len(),
        hours,
        healthy
    );
    ExitCode::SUCCESS
}
