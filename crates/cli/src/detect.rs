//! `scan` and `redact`: the secret detector on files and on a stream.

use crate::args::{RedactArgs, ScanArgs};
use crate::commands::Ctx;
use crate::failure::Failure;
use sequester_crypto::SecretValue;
use sequester_detect::{Detector, ScanOptions};
use sequester_model::{AgentName, ErrorCode};
use sequester_store::Store;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

fn detector(rules: Option<&Path>) -> Result<Detector, Failure> {
    let builtin = Detector::builtin();
    match rules {
        None => Ok(builtin),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(
                    ErrorCode::Io,
                    format!("cannot read rules file {}: {e}", path.display()),
                )
            })?;
            Ok(builtin.with_extra_rules(&text)?)
        }
    }
}

/// Width of the progress bar, in characters.
const BAR: usize = 24;

/// The terminal's progress line of a scan `elapsed` into it, at the `tick`-th redraw:
/// `[#########---------------]  38%  1204/3170 files  41.2 MB  85 MB/s  1s` once the totals
/// are known, a spinner with the same counts before.
fn progress_line(
    progress: &sequester_detect::ScanProgress,
    elapsed: std::time::Duration,
    tick: usize,
) -> String {
    let files = progress.visited_files.load(Ordering::Relaxed);
    let mb = progress.bytes.load(Ordering::Relaxed) as f64 / 1e6;
    let secs = elapsed.as_secs_f64();
    let counts = format!("{mb:.1} MB  {:.0} MB/s  {secs:.0}s", mb / secs.max(0.001));
    match progress.fraction() {
        Some(f) => {
            // f is in 0..=1, so the product is a small non-negative number.
            let filled = ((f * BAR as f64).round() as usize).min(BAR);
            format!(
                "[{}{}] {:>3.0}%  {files}/{} files  {counts}",
                "#".repeat(filled),
                "-".repeat(BAR - filled),
                f * 100.0,
                progress.total_files.load(Ordering::Relaxed)
            )
        }
        None => {
            let spinner = ['|', '/', '-', '\\'];
            format!(
                "{} scanning…  {files} files  {counts}",
                spinner[tick % spinner.len()]
            )
        }
    }
}

/// Scans the paths; exit status 1 when anything is found (0 when clean).
pub fn scan(args: &ScanArgs, json: bool) -> Result<(), Failure> {
    let detector = detector(args.rules.as_deref())?;
    for p in &args.paths {
        if !p.exists() {
            return Err(Failure::new(
                ErrorCode::Io,
                format!("{} does not exist", p.display()),
            ));
        }
    }
    let progress = Arc::new(sequester_detect::ScanProgress::default());
    let options = ScanOptions {
        respect_ignore_files: !args.no_ignore,
        max_file_size: args.max_file_size,
        show_secrets: args.show_secrets,
        progress: Some(Arc::clone(&progress)),
        ..ScanOptions::default()
    };
    let interactive = std::io::stderr().is_terminal() && !json && !args.sarif;
    let started = std::time::Instant::now();
    let report = if interactive {
        // A live line on the terminal while a long scan runs: a bar once a counting walk
        // beside the scan has found the totals, a spinner until then.
        let done = Arc::new(AtomicBool::new(false));
        let counter = {
            let (paths, options, done) = (args.paths.clone(), options.clone(), Arc::clone(&done));
            let progress = Arc::clone(&progress);
            std::thread::spawn(move || {
                if let Some((files, bytes)) = sequester_detect::count_paths(&paths, &options, &done)
                {
                    progress.set_totals(files, bytes);
                }
            })
        };
        let ticker = {
            let done = Arc::clone(&done);
            let progress = Arc::clone(&progress);
            std::thread::spawn(move || {
                let mut tick = 0;
                while !done.load(Ordering::Relaxed) {
                    eprint!(
                        "\r{}\x1b[K",
                        progress_line(&progress, started.elapsed(), tick)
                    );
                    tick += 1;
                    std::thread::sleep(std::time::Duration::from_millis(120));
                }
                eprint!("\r\x1b[K");
            })
        };
        let report = sequester_detect::scan_paths(&detector, &args.paths, &options);
        done.store(true, Ordering::Relaxed);
        let _ = ticker.join();
        let _ = counter.join();
        report
    } else {
        sequester_detect::scan_paths(&detector, &args.paths, &options)
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.sarif {
        sequester_detect::write_sarif(&mut out, &report.findings, &detector)?;
    } else if json {
        sequester_detect::write_json_lines(&mut out, &report.findings)?;
    } else {
        sequester_detect::write_table(&mut out, &report.findings)?;
    }
    out.flush()
        .map_err(|e| Failure::new(ErrorCode::Io, format!("cannot write the report: {e}")))?;
    drop(out);
    for e in &report.errors {
        eprintln!("warning[{}]: {e}", e.code());
    }
    if !json && !args.sarif {
        eprintln!(
            "scanned {} file(s), {:.1} MB in {:.2}s ({} binary, {} too large skipped)",
            report.files_scanned,
            report.bytes_scanned as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            report.binary_files_skipped,
            report.large_files_skipped
        );
    }
    if report.findings.is_empty() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// Copies stdin to stdout with findings replaced, in bounded memory.
pub async fn redact(ctx: &Ctx, args: &RedactArgs) -> Result<(), Failure> {
    let detector = detector(args.rules.as_deref())?;
    let sealing = if args.seal {
        let agent = AgentName::parse(args.agent.as_deref().unwrap_or_default())?;
        let store = Arc::new(ctx.open().await?);
        let tenant = ctx.tenant_id(&store).await?;
        let agent = store.agent(&tenant, &agent).await?;
        Some((store, tenant, agent.id))
    } else {
        None
    };
    let handle = tokio::runtime::Handle::current();
    let now = ctx.now;
    let store_for_close = sealing.as_ref().map(|(s, _, _)| Arc::clone(s));
    let result = tokio::task::spawn_blocking(move || -> Result<u64, Failure> {
        let first_error: Mutex<Option<Failure>> = Mutex::new(None);
        let mut found = 0u64;
        let replace = |f: &sequester_detect::Finding, secret: &[u8]| -> Vec<u8> {
            // As in the sanitize API, a credential's public half (an AWS access key id) stays
            // readable when sealing: it grants nothing alone, and the agent may need it.
            if sealing.is_some() && f.is_identifier() {
                return secret.to_vec();
            }
            found += 1;
            if let Some((store, tenant, agent)) = &sealing {
                let value = SecretValue::new(secret.to_vec());
                match handle.block_on(store.sanitize_secret(
                    tenant,
                    agent,
                    f.provider(),
                    f.suggested_hosts(),
                    value,
                    now,
                )) {
                    Ok(s) => return s.placeholder.into_bytes(),
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e.into());
                    }
                }
            }
            format!("<<REDACTED_{}>>", f.provider()).into_bytes()
        };
        let mut redactor = detector.redactor(replace);
        let mut input = std::io::stdin().lock();
        let mut output = std::io::stdout().lock();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(128 * 1024);
        let io_err = |e: std::io::Error| Failure::new(ErrorCode::Io, format!("redact: {e}"));
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            out.clear();
            redactor.push(&buf[..n], &mut out);
            output.write_all(&out).map_err(io_err)?;
        }
        out.clear();
        redactor.finish(&mut out);
        output.write_all(&out).map_err(io_err)?;
        output.flush().map_err(io_err)?;
        match first_error
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(e) => Err(e),
            None => Ok(found),
        }
    })
    .await
    .map_err(|e| Failure::new(ErrorCode::Internal, format!("redact stopped: {e}")))?;
    if let Some(store) = store_for_close {
        store.close().await;
    }
    let found = result?;
    if !ctx.json {
        tracing::info!(found, "redacted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_progress_line_is_a_spinner_until_the_totals_are_known_then_a_bar() {
        let p = sequester_detect::ScanProgress::default();
        p.visited_files.store(3, Ordering::Relaxed);
        p.bytes.store(2_500_000, Ordering::Relaxed);
        let spinning = progress_line(&p, Duration::from_secs(2), 1);
        assert_eq!(spinning, "/ scanning…  3 files  2.5 MB  1 MB/s  2s");

        p.set_totals(12, 10_000_000);
        p.visited_bytes.store(2_500_000, Ordering::Relaxed);
        let quarter = progress_line(&p, Duration::from_secs(2), 2);
        assert_eq!(
            quarter,
            format!(
                "[{}{}]  25%  3/12 files  2.5 MB  1 MB/s  2s",
                "#".repeat(6),
                "-".repeat(18)
            )
        );

        // A file that grew during the scan does not take the bar past its end.
        p.visited_bytes.store(11_000_000, Ordering::Relaxed);
        let full = progress_line(&p, Duration::from_secs(4), 3);
        assert!(
            full.starts_with(&format!("[{}] 100%", "#".repeat(BAR))),
            "{full}"
        );

        // Only empty files: the share is by files.
        let empty = sequester_detect::ScanProgress::default();
        empty.set_totals(4, 0);
        empty.visited_files.store(1, Ordering::Relaxed);
        assert!(progress_line(&empty, Duration::from_secs(1), 0).contains(" 25%  1/4 files"));
    }
}
