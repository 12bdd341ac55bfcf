//! Records the git commit the binary is built from, for `kitebridge --version`.
//!
//! `KITEBRIDGE_COMMIT` in the build environment wins (a build from a source tarball, where there
//! is no repository); otherwise `git rev-parse HEAD` in the source directory; otherwise `unknown`.
//! No crate: `git` is run as a command and a failure of any kind is the fallback, never an error.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KITEBRIDGE_COMMIT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let commit = std::env::var("KITEBRIDGE_COMMIT")
        .ok()
        .filter(|c| is_commit(c))
        .or_else(|| git(&dir, &["rev-parse", "HEAD"]).filter(|c| is_commit(c)))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: HEAD itself (a branch switch, a detached checkout), the branch it
    // names (a commit) and packed-refs (a branch whose ref was packed). In a worktree these
    // paths lie in the main repository's git directory; git says where.
    for file in ["HEAD", "packed-refs"] {
        rerun_on_git_path(&dir, file);
    }
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        rerun_on_git_path(&dir, &branch);
    }
    println!("cargo:rustc-env=KITEBRIDGE_COMMIT={commit}");
}

/// A full or abbreviated hexadecimal object name, nothing else (it ends up in `--version`).
fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The trimmed standard output of `git ARGS` in `dir`, if it ran and succeeded.
fn git(dir: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned())
}

fn rerun_on_git_path(dir: &str, name: &str) {
    if let Some(path) = git(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-path", name],
    ) {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
