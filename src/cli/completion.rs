//! Shell completion at run time (clap_complete's `COMPLETE=SHELL cachewarden` protocol): the installed bash, zsh and
//! fish scripts only register `cachewarden` as its own completer, so the candidates always match this binary's
//! arguments, and the job names (`trigger NAME`, `--job`, `--warm`) come from the configuration file the command line
//! names (`-c`), else `$CACHEWARDEN_CONFIG`, else /etc/cachewarden/jobs.toml.

use std::ffi::OsString;
use std::path::PathBuf;

use clap_complete::CompletionCandidate;

/// The environment variable naming the shell that asks (clap_complete's default).
pub const VAR: &str = "COMPLETE";

/// The shells the package installs a script for, with the script's file name.
pub const SHELLS: &[(&dyn clap_complete::env::EnvCompleter, &str)] = &[
    (&clap_complete::env::Bash, "cachewarden.bash"),
    (&clap_complete::env::Zsh, "_cachewarden"),
    (&clap_complete::env::Fish, "cachewarden.fish"),
];

/// Answers the shell and exits when it is asking (`COMPLETE` set); else returns at once.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(super::command)
        .var(VAR)
        .complete();
}

/// The completer of every argument that names a warm job.
pub(crate) fn job_argument() -> clap_complete::ArgValueCandidates {
    clap_complete::ArgValueCandidates::new(|| job_candidates(std::env::args_os()))
}

/// The warm jobs of the configuration file `args` (the words being completed) names, each with its schedule as
/// help; none when the file cannot be read or parsed (a completion never prints an error).
fn job_candidates(args: impl Iterator<Item = OsString>) -> Vec<CompletionCandidate> {
    let path = crate::config::resolve_path(config_flag(args));
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(document) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(jobs) = document.get("warm").and_then(toml::Value::as_array) else {
        return Vec::new();
    };
    jobs.iter()
        .filter_map(|job| {
            let name = job.get("name")?.as_str()?;
            let schedule = job.get("schedule").and_then(toml::Value::as_str);
            Some(CompletionCandidate::new(name).help(schedule.map(|schedule| schedule.to_owned().into())))
        })
        .collect()
}

/// The value of the last `--config`/`-c` among `args` (`--config PATH`, `--config=PATH`, `-c PATH`, `-cPATH`).
fn config_flag(args: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    let mut found = None;
    let mut args = args.map(|arg| arg.to_string_lossy().into_owned()).peekable();
    while let Some(arg) = args.next() {
        if arg == "--config" || arg == "-c" {
            found = args.next_if(|next| !next.is_empty()).map(PathBuf::from).or(found);
        } else if let Some(value) = arg.strip_prefix("--config=").or_else(|| arg.strip_prefix("-c")) {
            found = Some(PathBuf::from(value));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> impl Iterator<Item = OsString> {
        line.split(' ').map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn the_configuration_is_the_one_the_command_line_names() {
        for (line, expected) in [
            ("cachewarden -- cachewarden --config a.toml trigger ", Some("a.toml")),
            ("cachewarden -- cachewarden trigger -c b.toml x", Some("b.toml")),
            ("cachewarden -- cachewarden --config=c.toml run --job ", Some("c.toml")),
            ("cachewarden -- cachewarden -cd.toml trigger ", Some("d.toml")),
            ("cachewarden -- cachewarden trigger ", None),
        ] {
            assert_eq!(config_flag(words(line)), expected.map(PathBuf::from), "{line}");
        }
    }

    #[test]
    fn every_job_of_the_file_is_a_candidate_with_its_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.toml");
        std::fs::write(
            &path,
            "[[warm]]\nname = \"top_products\"\nschedule = \"0 */5 * * * *\"\n\n[[warm]]\nname = \"users\"\n",
        )
        .unwrap();
        let line = format!("cachewarden -- cachewarden -c {} trigger ", path.display());
        let candidates = job_candidates(words(&line));
        let names: Vec<String> = candidates
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["top_products", "users"]);
        assert_eq!(
            candidates[0].get_help().map(ToString::to_string).as_deref(),
            Some("0 */5 * * * *")
        );
        // A file that does not parse gives no candidates, and no error on the user's terminal.
        std::fs::write(&path, "[[warm]\n").unwrap();
        assert!(job_candidates(words(&line)).is_empty());
    }
}
