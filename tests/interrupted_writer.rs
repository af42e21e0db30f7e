//! A writer interrupted by a signal leaves no temporary file, and a stale one from an
//! earlier interrupted run does not block the next.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cardinfer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cardinfer"))
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_terminated_synth_removes_its_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("big.gguf");
    let tmp = dir.path().join("big.gguf.tmp");
    // Qwen3-8B: several GB, long enough to be caught while writing.
    let mut child = cardinfer()
        .args(["synth", "--preset", "qwen3-8b", "--output"])
        .arg(&output)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(&tmp, Duration::from_secs(60)), "the writer started");
    std::thread::sleep(Duration::from_millis(50));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "ended by the handler");
    assert!(!tmp.exists(), "temporary file removed");
    assert!(!output.exists(), "no output from an interrupted run");
}

#[test]
fn a_stale_temporary_file_is_replaced_and_anything_else_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("tiny.gguf");
    let tmp = dir.path().join("tiny.gguf.tmp");
    std::fs::write(&tmp, b"left by an interrupted run").unwrap();
    let run = |output: &Path| {
        cardinfer().args(["synth", "--preset", "qwen3-0.6b", "--layers", "1", "--output"]).arg(output).output().unwrap()
    };
    let done = run(&output);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(output.is_file() && !tmp.exists());

    let blocked = dir.path().join("blocked.gguf");
    std::fs::create_dir(dir.path().join("blocked.gguf.tmp")).unwrap();
    let failed = run(&blocked);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && stderr.contains("blocked.gguf.tmp"), "{stderr}");
    assert!(!blocked.exists());
}
