//! Library behaviour is chosen by typed options, never by environment variables: only
//! the command line (`src/bin/`) reads them. This test reads the library crates' sources
//! and fails on any runtime read of the environment.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_library_crate_reads_the_environment() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut files = Vec::new();
    for krate in ["cardinfer-core", "cardinfer-quant", "cardinfer-plan", "cardinfer-stream"] {
        rust_files(&crates.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut reads = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("UTF-8 source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if ["env::var", "env::vars", "var_os("].iter().any(|needle| code.contains(needle)) {
                reads.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(reads.is_empty(), "the library reads the environment:\n{}", reads.join("\n"));
}
