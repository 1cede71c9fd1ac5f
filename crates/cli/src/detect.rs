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
        // A live line on the terminal while a long scan runs.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let done = Arc::clone(&done);
            let progress = Arc::clone(&progress);
            std::thread::spawn(move || {
                let spinner = ['|', '/', '-', '\\'];
                let mut i = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let files = progress.files.load(std::sync::atomic::Ordering::Relaxed);
                    let mb = progress.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
                    let secs = started.elapsed().as_secs_f64();
                    eprint!(
                        "\r{} scanning… {files} files, {mb:.1} MB ({:.0} MB/s), {secs:.0}s",
                        spinner[i % 4],
                        mb / secs.max(0.001)
                    );
                    i += 1;
                    std::thread::sleep(std::time::Duration::from_millis(120));
                }
                eprint!("\r\x1b[K");
            })
        };
        let report = sequester_detect::scan_paths(&detector, &args.paths, &options);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = ticker.join();
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
