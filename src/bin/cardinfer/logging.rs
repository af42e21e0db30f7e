//! The library's diagnostics ([`cardinfer_stream::diagnostics`]) on stderr, and how an
//! error ends the process.
//!
//! `RUST_LOG` takes `tracing`'s filter syntax; without it, the environment variables of
//! earlier versions still work: `CARDINFER_TIMELINE=1` (each pass's device timeline;
//! `=2` every block of decode steps too), `CARDINFER_TRACE=1` (every block read and
//! computed), `CARDINFER_HOST_STAGES=1` (each host layer's steps).

use cardinfer_stream::diagnostics::{BLOCKS, HOST_STAGES, TIMELINE};
use tracing_subscriber::EnvFilter;

/// Installs a subscriber for the diagnostics asked for, if any.
pub fn init() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => directives,
        Err(_) => {
            let mut directives = Vec::new();
            match std::env::var("CARDINFER_TIMELINE").as_deref() {
                Ok("2") => directives.push(format!("{TIMELINE}=trace")),
                Ok(_) => directives.push(format!("{TIMELINE}=debug")),
                Err(_) => {}
            }
            if std::env::var_os("CARDINFER_TRACE").is_some() {
                directives.push(format!("{BLOCKS}=trace"));
            }
            if std::env::var_os("CARDINFER_HOST_STAGES").is_some() {
                directives.push(format!("{HOST_STAGES}=debug"));
            }
            directives.join(",")
        }
    };
    if filter.is_empty() {
        return;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .with_level(false)
        .with_target(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Writes `text` to standard output now. A reader that went away (`| head`) ends the
/// program quietly with status 141 (as a shell reports SIGPIPE); any other failure
/// (a full disk) with a message and status 1. For output streamed while generating,
/// where an error cannot travel back through the generator.
pub fn stdout_or_exit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// Prints an error's chain once (each cause that adds something) and maps it to exit
/// code 1; a closed stdout (`| head`) ends quietly with status 141.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    let Err(error) = result else { return std::process::ExitCode::SUCCESS };
    let broken_pipe = error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return std::process::ExitCode::from(141);
    }
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    eprintln!("error: {message}");
    std::process::ExitCode::FAILURE
}
