//! The command line under test: the binary, and one-shot commands run to their end.

use super::*;

/// The cachewarden binary, with none of the caller's configuration in its environment (`CACHEWARDEN_CONFIG`,
/// `CREDENTIALS_DIRECTORY`) and logs at `info`.
pub fn cachewarden() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cachewarden"));
    command
        .env("RUST_LOG", "info")
        .env_remove("CACHEWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY");
    command
}

/// Runs `cachewarden run --once --config CONFIG`, which must succeed; everything it printed (stdout, then stderr).
pub fn run_once_ok(config: &Path) -> String {
    let (code, stdout, stderr) = cli_output(&["run", "--once"], config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    format!("{stdout}{stderr}")
}

/// Runs `cachewarden ARGS --config CONFIG` to its end: its exit code, stdout and stderr.
pub fn cli_output(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    finished(cachewarden().args(args).arg("--config").arg(config))
}

/// Runs `cachewarden ARGS` as given (no `--config` added: an `--admin` command, a configuration that is not there) to
/// its end: its exit code, stdout and stderr.
pub fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    finished(cachewarden().args(args))
}

/// Runs `command` to its end: its exit code, stdout and stderr.
pub fn finished(command: &mut Command) -> (Option<i32>, String, String) {
    let output = command.output().unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}
