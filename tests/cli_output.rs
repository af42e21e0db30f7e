//! The command line when its reader goes away: `cardinfer run … | head -c 1` ends quietly
//! with status 141 (SIGPIPE's), not with a panic.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let Some(model) = common::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", true) else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardinfer"))
        .args(["run", "--device", "cpu", "-n", "64", "--temperature", "0", "-p", "Once upon a time", "-m"])
        .arg(&model)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cardinfer binary runs");
    let mut first = [0u8; 1];
    child.stdout.take().expect("piped stdout").read_exact(&mut first).expect("some output");
    // The reader goes away after one byte.
    let output = child.wait_with_output().expect("the run ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}

#[test]
fn chat_reports_a_line_that_is_not_text_and_carries_on() {
    use std::io::Write;
    let Some(model) = common::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", true) else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardinfer"))
        .args(["chat", "--device", "cpu", "-n", "4", "-m"])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cardinfer binary runs");
    child.stdin.take().expect("piped stdin").write_all(b"bad \xff\xfe line\nHello\n").expect("input written");
    let output = child.wait_with_output().expect("the chat ends at end of input");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    assert!(stderr.contains("4 generated"), "the next line was answered: {stderr}");
}

/// `plan` takes `-m` as every other subcommand does (the README's example), and prints
/// the placement table with the KV cache's type and place.
#[test]
fn plan_takes_the_model_as_dash_m() {
    let Some(model) = common::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", true) else { return };
    let output = Command::new(env!("CARGO_BIN_EXE_cardinfer"))
        .args(["plan", "--vram-budget", "64MiB", "--context", "1024", "--kv-type", "q8_0", "-m"])
        .arg(&model)
        .output()
        .expect("the cardinfer binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("| KV cache | 1024 tokens, q8_0,"), "{stdout}");
    assert!(stdout.contains("predicted decode with the cache full"), "{stdout}");
}
