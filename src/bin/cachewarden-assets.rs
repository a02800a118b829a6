//! Writes cachewarden's man pages and shell completion scripts, from its command-line definition so they never
//! drift from `--help`: `cachewarden-assets DIR` fills `DIR/man` and `DIR/completions` (used by `scripts/package`).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use cachewarden::cli;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: cachewarden-assets DIR");
        return ExitCode::from(cli::exit::USAGE);
    };
    match write_all(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: writing into {}: {error}", Path::new(&dir).display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path) -> std::io::Result<()> {
    let mut command = cli::command().disable_help_subcommand(true);
    command.build();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    write_page(&man, &command, true)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_page(&man, sub, false)?;
    }
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    // Each script registers `cachewarden` as its own completer (see `cli::completion`).
    for (shell, file) in cli::completion::SHELLS {
        let mut script = Vec::new();
        shell.write_registration(
            cli::completion::VAR,
            "cachewarden",
            "cachewarden",
            "cachewarden",
            &mut script,
        )?;
        std::fs::write(completions.join(file), script)?;
    }
    Ok(())
}

/// One page: clap's sections, then (on the main page) exit status, environment and files.
fn write_page(dir: &Path, command: &clap::Command, main: bool) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if command.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    if main {
        let mut roff = roff::Roff::new();
        roff.control("SH", ["EXIT STATUS"]);
        for (code, meaning) in cli::exit::CODES {
            roff.control("TP", [] as [&str; 0])
                .text([roff::roman(code.to_string())]);
            roff.text([roff::roman(*meaning)]);
        }
        roff.control("SH", ["ENVIRONMENT"]);
        for (name, meaning) in [
            (
                "CACHEWARDEN_CONFIG",
                "the configuration file when --config is not given",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "systemd's credentials directory: mysql-url and redis-url there override the file's URLs",
            ),
            (
                "CACHEWARDEN_<SECTION>__<FIELD>",
                "overrides a field of the file, e.g. CACHEWARDEN_MYSQL__URL (see /usr/share/doc/cachewarden/configuration.md)",
            ),
            ("RUST_LOG", "the log filter, e.g. cachewarden=debug"),
            ("NO_COLOR", "plain text logs even on a terminal"),
        ] {
            roff.control("TP", [] as [&str; 0]).text([roff::bold(name)]);
            roff.text([roff::roman(meaning)]);
        }
        roff.control("SH", ["FILES"]);
        for (name, meaning) in [
            (
                "/etc/cachewarden/jobs.toml",
                "the configuration: connections, warm jobs, binlog rules",
            ),
            (
                "/etc/cachewarden/credentials/",
                "mysql-url and redis-url, root-only; the service receives them through LoadCredential=",
            ),
            (
                "/var/lib/cachewarden/",
                "the binlog checkpoint when [binlog] checkpoint = \"file\"",
            ),
        ] {
            roff.control("TP", [] as [&str; 0]).text([roff::bold(name)]);
            roff.text([roff::roman(meaning)]);
        }
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roff::roman(
            "The installed documentation in /usr/share/doc/cachewarden/: configuration.md (every setting), \
             operations.md (signals, the admin endpoint, metrics, failure behaviour, least privilege), aws.md (RDS, \
             Aurora, ElastiCache), architecture.md; gzipped (.md.gz) in the Debian package. \
             systemctl(1), journalctl(1), systemd.exec(5)",
        )]);
        roff.to_writer(&mut page)?;
        man.render_version_section(&mut page)?;
    }
    let mut file = std::fs::File::create(dir.join(man.get_filename()))?;
    file.write_all(&page)
}
