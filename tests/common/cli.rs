//! The command line under test: one-shot commands and their output.

use super::*;

/// Runs `cachewarden ARGS --config CONFIG` for a configuration that needs no test's servers (`check`, `rules`
/// offline): its exit code, stdout and stderr.
pub fn cli_offline(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cachewarden"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CACHEWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}
