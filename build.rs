//! Rebuilds when a migration is added (`sqlx::migrate!` embeds the `migrations/` folder at compile time), and
//! names the commit built (`cachewarden_build_info`), when built from a git checkout.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=CACHEWARDEN_COMMIT={commit}");
        for path in [".git/HEAD", ".git/refs/heads"] {
            if std::path::Path::new(path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
