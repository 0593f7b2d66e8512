//! Records the git commit the server is built from as `SIPHON_GIT_SHA` (for
//! `siphon_build_info`): `$SIPHON_GIT_SHA` if set (container builds without `.git`), else
//! `git rev-parse`, else "unknown".

use std::path::PathBuf;
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
    println!("cargo:rerun-if-env-changed=SIPHON_GIT_SHA");
    let sha = std::env::var("SIPHON_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SIPHON_GIT_SHA={sha}");
    // Rebuild when HEAD moves (checkout, commit), not on every source change.
    let git_path = |p: &str| git(&["rev-parse", "--path-format=absolute", "--git-path", p]);
    let mut watch = vec![git_path("HEAD")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git_path(&reference));
        watch.push(git_path("packed-refs"));
    }
    for path in watch.into_iter().flatten() {
        if PathBuf::from(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
