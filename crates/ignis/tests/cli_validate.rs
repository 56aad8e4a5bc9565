//! `ignis validate`: exit codes and located errors on stderr.
// Integration tests are their own crate: there is no `#[cfg(test)]` module to put them in.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::Command;

fn validate(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .arg("validate")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run ignis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";

#[test]
fn valid_default_directory_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(wf.join("ci.yml"), VALID).expect("write");
    let (code, stderr) = validate(dir.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn invalid_files_exit_two_with_every_located_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yml"), "").expect("write");
    std::fs::write(
        dir.path().join("b.yml"),
        "on: push\njobs:\n  a:\n    needs: x\n    runs-on: x\n    steps:\n      - name: none\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("c.yml"), VALID).expect("write");
    let (code, stderr) = validate(dir.path(), &["-W", "a.yml", "-W", "b.yml", "-W", "c.yml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("a.yml:1:1: file is empty"), "{stderr}");
    assert!(
        stderr.contains("b.yml:4:12: job `a` needs `x`, which is not a job of this workflow"),
        "{stderr}"
    );
    assert!(
        stderr.contains("b.yml:7:9: job `a` step 0: a step needs either `uses` or `run`"),
        "{stderr}"
    );
    assert!(!stderr.contains("c.yml"), "{stderr}");
}

#[test]
fn missing_path_exits_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = validate(dir.path(), &["-W", "nope.yml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("nope.yml does not exist"), "{stderr}");
}
