//! Prints every finding's rule, span, confidence and validation (never the secret's bytes),
//! one per line, to compare the detector's output before and after a change.
//!
//! Usage: `dump_findings [--jsonl] FILE...`. With `--jsonl`, every line of each file is a
//! JSON object whose `text` field is scanned as a separate input (the corpus format).
//! Output: `file<TAB>input<TAB>rule<TAB>start..end<TAB>confidence<TAB>validation`.

use std::io::Write;

use sequester_detect::Detector;

mod input;

fn main() -> std::process::ExitCode {
    let mut jsonl = false;
    let mut files = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--jsonl" => jsonl = true,
            _ => files.push(a),
        }
    }
    let detector = Detector::builtin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for path in files {
        let Some(data) = input::read(&path) else {
            return std::process::ExitCode::from(1);
        };
        let inputs: Vec<Vec<u8>> = if jsonl {
            data.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(|s| s.into()))
                .collect()
        } else {
            vec![data]
        };
        for (i, hay) in inputs.iter().enumerate() {
            for f in detector.detect(hay) {
                let line = format!(
                    "{path}\t{i}\t{}\t{}..{}\t{}\t{:?}\n",
                    f.rule_id(),
                    f.span.start,
                    f.span.end,
                    f.confidence,
                    f.validation
                );
                if out.write_all(line.as_bytes()).is_err() {
                    return std::process::ExitCode::from(1);
                }
            }
        }
    }
    if out.flush().is_err() {
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
