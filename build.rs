//! Build script: records the git commit the binary is built from
//! (`FIREDRILL_GIT_COMMIT`), so every report names the exact build that wrote it.
//! Tolerant: outside a git checkout (a crates.io tarball, a vendored copy) or without
//! `git`, the variable is empty and the reports say "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=FIREDRILL_GIT_COMMIT={commit}");
    // Re-run when HEAD moves (a commit, a checkout): HEAD itself and its reflog, in
    // whichever git directory this checkout (or worktree) uses.
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
