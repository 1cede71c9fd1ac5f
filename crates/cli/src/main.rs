//! The `sequester` binary: argument parsing and wiring only. Behaviour lives in the library
//! crates; this crate turns their typed errors into messages and exit statuses.

mod args;
mod commands;
mod detect;
mod failure;
mod input;
mod intercept;
mod output;
mod run;

use clap::Parser as _;
use sequester_proxy::log_redact::LogRedactor;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc instead of the system allocator: the data plane allocates and frees small buffers
/// on every request from two threads, where glibc's malloc took about a tenth of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log lines go to standard error through the redactor: detected secrets and every active
/// secret value (in its encoded forms too) are replaced before a line is written.
struct RedactedStderr(Arc<LogRedactor>);

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let out = self.0.redact(buf);
        std::io::stderr().lock().write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(serving: bool, redactor: Arc<LogRedactor>) {
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEQUESTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || RedactedStderr(Arc::clone(&redactor)))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Async worker threads: `SEQUESTER_WORKER_THREADS` if set to a positive number, else one per
/// available core.
fn worker_threads() -> usize {
    std::env::var("SEQUESTER_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // Confine-and-exec runs before any thread exists: Landlock applies to the calling thread.
    if let args::Command::ExecConfined(a) = &cli.command {
        return ExitCode::from(u8::try_from(run::exec_confined(a)).unwrap_or(127));
    }
    let redactor = Arc::new(LogRedactor::new());
    init_logging(
        matches!(cli.command, args::Command::Serve(_) | args::Command::Up(_)),
        Arc::clone(&redactor),
    );
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error[internal_error]: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli, redactor)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(failure) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"error": {"code": failure.code.as_str(), "message": failure.message}})
                );
            } else {
                eprintln!("error[{}]: {}", failure.code, failure.message);
            }
            ExitCode::from(failure.exit_status())
        }
    }
}
