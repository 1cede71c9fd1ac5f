//! Single-threaded throughput of the detector, for `bench/detect/run.sh`.
//!
//! Usage: `scan_bench [--repeat N] [--redact] FILE...`. Each file is read into memory first
//! (I/O is not measured), then scanned on one thread `N` times (default 3); prints the best
//! run's MB/s per file and the number of findings, as `file<TAB>bytes<TAB>MB/s<TAB>findings`.
//! `--redact` measures the streaming redactor (64 KiB chunks) instead of `detect`.
//! Never prints what it finds.

use std::time::Instant;

use sequester_detect::Detector;

mod input;

fn main() -> std::process::ExitCode {
    let mut repeat = 3usize;
    let mut redact = false;
    let mut prefilter_only = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => {
                repeat = args.next().and_then(|n| n.parse().ok()).unwrap_or(3).max(1);
            }
            "--redact" => redact = true,
            "--prefilter-only" => prefilter_only = true,
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        eprintln!("usage: scan_bench [--repeat N] [--redact] FILE...");
        return std::process::ExitCode::from(2);
    }
    let detector = Detector::builtin();
    for path in files {
        let Some(data) = input::read(&path) else {
            return std::process::ExitCode::from(1);
        };
        let mut best = f64::INFINITY;
        let mut count = 0usize;
        for _ in 0..repeat {
            let start = Instant::now();
            count = if prefilter_only {
                detector.count_keyword_hits(&data)
            } else if redact {
                let mut n = 0usize;
                let mut out = Vec::with_capacity(64 * 1024);
                let mut r = detector.redactor(|_, _| {
                    n += 1;
                    b"<<SECRET_000000000000>>".to_vec()
                });
                for chunk in data.chunks(64 * 1024) {
                    out.clear();
                    r.push(chunk, &mut out);
                }
                out.clear();
                r.finish(&mut out);
                n
            } else {
                detector.detect(&data).len()
            };
            best = best.min(start.elapsed().as_secs_f64());
        }
        let mbps = data.len() as f64 / 1e6 / best;
        println!("{path}\t{}\t{mbps:.1}\t{count}", data.len());
    }
    std::process::ExitCode::SUCCESS
}
