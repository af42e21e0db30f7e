//! `--draft` on the command line, with the real models CI fetches: SmolLM2 drafting for
//! itself decodes the ids plain decoding does and reports what the draft did; a draft of
//! another vocabulary (Gemma-3-270M for SmolLM2) is refused with both files named.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn models() -> Option<(PathBuf, PathBuf)> {
    let dir = common::model_cache_dir();
    let (smol, gemma) = (dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"), dir.join("gemma-3-270m-q4_k_m.gguf"));
    if smol.is_file() && gemma.is_file() {
        return Some((smol, gemma));
    }
    assert!(std::env::var("CI").is_err(), "CI must fetch SmolLM2 and Gemma-3-270M (scripts/fetch-models.sh)");
    eprintln!("SKIP: run scripts/fetch-models.sh");
    None
}

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cardinfer")).args(args).output().expect("the cardinfer binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("valid JSON")
}

#[test]
fn a_draft_run_decodes_the_plain_ids_and_reports_its_drafts() {
    let Some((smol, _)) = models() else { return };
    let smol = smol.to_str().unwrap();
    let base = ["run", "--device", "cpu", "-n", "24", "--temperature", "0", "-p", "The capital of France is", "--json"];
    let (ok, plain, err) = run(&[&base[..], &["-m", smol]].concat());
    assert!(ok, "{err}");
    let draft_args = ["-m", smol, "--draft", smol, "--draft-fixed", "--draft-min-confidence", "0"];
    let (ok, drafted, err) = run(&[&base[..], &draft_args[..]].concat());
    assert!(ok, "{err}");
    let (plain, drafted) = (json_of(&plain), json_of(&drafted));
    assert_eq!(plain["generated_ids"], drafted["generated_ids"]);
    let stats = &drafted["speculation"];
    assert!(stats["drafted"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["accepted"], stats["drafted"], "a model drafting for itself is always right: {stats}");
    assert!(plain["speculation"].is_null());
}

#[test]
fn a_draft_of_another_vocabulary_is_refused_naming_both_files() {
    let Some((smol, gemma)) = models() else { return };
    let args = [
        "run",
        "--device",
        "cpu",
        "-n",
        "4",
        "-p",
        "Hi",
        "-m",
        smol.to_str().unwrap(),
        "--draft",
        gemma.to_str().unwrap(),
    ];
    let (ok, _, err) = run(&args);
    assert!(!ok);
    assert!(err.contains("cannot draft for"), "{err}");
    assert!(err.contains("gemma-3-270m") && err.contains("SmolLM2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
