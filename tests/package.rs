//! The Debian package `scripts/package` builds (from this test build's binaries): its metadata and contents,
//! lintian, `systemd-analyze verify` on the unit it ships, the man pages and completions against `--help`, and the
//! shipped configuration with credentials beside it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::text;

/// A man page as text: `man` marks bold and underline by overstriking (`X\x08X`); keep the last of each pair.
fn man_text(page: &Path) -> String {
    let (text, _) = run(Command::new("man").arg("-l").arg(page).env("MANWIDTH", "200"));
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\x08' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

fn run(command: &mut Command) -> (String, String) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{command:?} failed: {stdout}{stderr}");
    (stdout, stderr)
}

/// What the bash completion script `script` offers for the command line `cachewarden WORDS…` (the last word being
/// completed), sourced into a real bash with the binaries in `bin` first on PATH, as a user's shell runs it.
fn complete_in_bash(script: &Path, bin: &Path, words: &[&str]) -> Vec<String> {
    let driver = r#"source "$1"; shift
COMP_WORDS=(cachewarden "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_TYPE=9
_clap_complete_cachewarden cachewarden "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let (out, _) = run(Command::new("bash")
        .args(["-c", driver, "bash"])
        .arg(script)
        .args(words)
        .env("PATH", path)
        .env_remove("CACHEWARDEN_CONFIG"));
    out.lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

/// Runs `scripts/<script>` on this test build's binaries into a directory of its own (kept while the returned guard
/// lives); the package it wrote, whose name must start with `name`.
fn package(script: &str, name: &str, envs: &[(&str, &std::ffi::OsStr)]) -> (tempfile::TempDir, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binaries = Path::new(env!("CARGO_BIN_EXE_cachewarden")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (stdout, _) = run(Command::new(root.join("scripts").join(script))
        .env("CACHEWARDEN_BIN_DIR", binaries)
        .env("CACHEWARDEN_PACKAGE_DIR", out.path())
        .envs(envs.iter().copied()));
    let package = PathBuf::from(stdout.trim());
    assert!(
        package.file_name().unwrap().to_str().unwrap().starts_with(name),
        "{}",
        package.display()
    );
    (out, package)
}

#[test]
fn the_package_installs_binary_unit_conffile_credentials_man_pages_and_completions() {
    let version = env!("CARGO_PKG_VERSION");
    let (_out, deb) = package("package", &format!("cachewarden_{version}_"), &[]);
    let deb = deb.as_path();

    let (info, _) = run(Command::new("dpkg-deb").arg("--info").arg(deb));
    for field in [
        "Package: cachewarden".to_string(),
        format!("Version: {version}"),
        "Depends: libc6".into(),
        "conffiles".into(),
    ] {
        assert!(info.contains(&field), "no {field} in:\n{info}");
    }
    let (contents, _) = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let entry = |path: &str| {
        contents
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("the package has no {path}:\n{contents}"))
    };
    assert!(entry("usr/bin/cachewarden").starts_with("-rwxr-xr-x root/root"));
    assert!(entry("etc/cachewarden/credentials/").starts_with("drwx------ root/root"));
    for path in [
        "lib/systemd/system/cachewarden.service",
        "lib/systemd/system/cachewarden-credentials.service",
        "usr/lib/cachewarden/fetch-credentials",
        "usr/share/doc/cachewarden/aws.md.gz",
        "etc/cachewarden/jobs.toml",
        "usr/share/man/man1/cachewarden.1.gz",
        "usr/share/man/man1/cachewarden-run.1.gz",
        "usr/share/bash-completion/completions/cachewarden",
        "usr/share/zsh/vendor-completions/_cachewarden",
        "usr/share/fish/vendor_completions.d/cachewarden.fish",
        "usr/share/doc/cachewarden/copyright",
        "usr/share/doc/cachewarden/changelog.gz",
    ] {
        entry(path);
    }

    // The maintainer scripts with the real deb-systemd-helper, in a scratch root (DPKG_ROOT): a first install prints
    // the hint without a running systemd and registers the unit; an operator enables it; remove and purge leave no
    // link behind.
    let scratch = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(scratch.path()));
    let control = scratch.path().join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    let script = |name: &str, args: &[&str]| {
        // As dpkg runs them (deb-systemd-helper refuses to act for anyone else).
        run(Command::new("sh")
            .arg(control.join(name))
            .args(args)
            .env("DPKG_ROOT", scratch.path())
            .env("DPKG_MAINTSCRIPT_PACKAGE", "cachewarden")
            .env("DPKG_MAINTSCRIPT_NAME", name))
    };
    let (hint, _) = script("postinst", &["configure", ""]);
    assert!(hint.contains("systemctl enable --now cachewarden"), "{hint}");
    let state = scratch
        .path()
        .join("var/lib/systemd/deb-systemd-helper-enabled/cachewarden.service.dsh-also");
    assert!(
        state.is_file(),
        "postinst did not register the unit with deb-systemd-helper"
    );
    run(Command::new("deb-systemd-helper")
        .args(["enable", "cachewarden.service"])
        .env("DPKG_ROOT", scratch.path())
        .env("DPKG_MAINTSCRIPT_PACKAGE", "cachewarden"));
    let wants = scratch
        .path()
        .join("etc/systemd/system/multi-user.target.wants/cachewarden.service");
    assert!(wants.symlink_metadata().is_ok(), "enable made no link");
    let (upgrade, _) = script("postinst", &["configure", "0.0.9"]);
    assert!(
        !upgrade.contains("systemctl enable"),
        "an upgrade repeats the hint: {upgrade}"
    );
    script("postrm", &["remove"]);
    script("postrm", &["purge"]);
    assert!(wants.symlink_metadata().is_err(), "purge left {}", wants.display());
    assert!(!state.exists(), "purge left the helper's state");

    // lintian: no errors (the 0700 credentials directory is a deliberate warning).
    let output = Command::new("lintian")
        .arg(deb)
        .output()
        .expect("lintian is installed by scripts/services");
    let (lint, lint_err) = text(&output);
    assert!(
        !lint.lines().any(|line| line.starts_with("E: ")) && output.status.code() == Some(0),
        "lintian:\n{lint}{lint_err}"
    );

    let tree = tempfile::tempdir().unwrap();
    let tree = tree.path();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(tree));
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(control.path()));
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/cachewarden/jobs.toml"
    );

    // The unit passes `systemd-analyze verify` against the packaged binary and man page (the targets it orders
    // against are copied from this host).
    let units = tree.join("lib/systemd/system");
    for host_units in ["/lib/systemd/system", "/usr/lib/systemd/system"] {
        for unit in std::fs::read_dir(host_units).into_iter().flatten().flatten() {
            let name = unit.file_name();
            let name = name.to_string_lossy();
            if (name.ends_with(".target") || name.ends_with(".slice")) && !units.join(&*name).exists() {
                let _ = std::fs::copy(unit.path(), units.join(&*name));
            }
        }
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", tree.display()))
        .arg(units.join("cachewarden.service"))
        .arg(units.join("cachewarden-credentials.service"))
        .env("MANPATH", tree.join("usr/share/man"))
        .output()
        .unwrap();
    let (verify_out, verify_err) = text(&output);
    assert!(
        output.status.success(),
        "systemd-analyze verify:\n{verify_out}{verify_err}"
    );
    let unit = std::fs::read_to_string(units.join("cachewarden.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/cachewarden run"), "{unit}");

    // The man pages and completions say what --help says: every command and every option.
    let binary = tree.join("usr/bin/cachewarden");
    let (help, _) = run(Command::new(&binary).arg("--help"));
    let man = man_text(&tree.join("usr/share/man/man1/cachewarden.1.gz"));
    // It points at the documentation the package installs.
    assert!(
        man.contains("/usr/share/doc/cachewarden/")
            && tree.join("usr/share/doc/cachewarden/configuration.md.gz").is_file(),
        "{man}"
    );
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(commands.len() >= 8, "{help}");
    let bash = tree.join("usr/share/bash-completion/completions/cachewarden");
    let offered = complete_in_bash(&bash, &tree.join("usr/bin"), &[""]);
    for command in &commands {
        assert!(
            man.contains(&format!("cachewarden-{command}(1)")),
            "man lacks {command}:\n{man}"
        );
        assert!(
            offered.contains(&command.to_string()),
            "bash completion lacks {command}: {offered:?}"
        );
        let (sub_help, _) = run(Command::new(&binary).args([command, "--help"]));
        let sub_man = man_text(&tree.join(format!("usr/share/man/man1/cachewarden-{command}.1.gz")));
        for option in sub_help.split_whitespace().filter(|word| word.starts_with("--")) {
            let option = option.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            assert!(
                sub_man.contains(option),
                "cachewarden-{command}(1) lacks {option}:\n{sub_man}"
            );
        }
    }
    // The job names come from the configuration the command line names.
    let scratch = tempfile::tempdir().unwrap();
    let jobs = scratch.path().join("jobs.toml");
    std::fs::write(
        &jobs,
        "[[warm]]\nname = \"top_products\"\n\n[[warm]]\nname = \"users\"\n",
    )
    .unwrap();
    let jobs = jobs.to_str().unwrap();
    let offered = complete_in_bash(&bash, &tree.join("usr/bin"), &["-c", jobs, "trigger", ""]);
    let names: Vec<&String> = offered.iter().filter(|word| !word.starts_with('-')).collect();
    assert_eq!(names, ["top_products", "users"], "{offered:?}");
    assert_eq!(
        complete_in_bash(
            &bash,
            &tree.join("usr/bin"),
            &["--config", jobs, "run", "--once", "--job", "u"]
        ),
        ["users"]
    );
    assert!(
        man.contains("EXIT STATUS") && man.contains("78") && man.contains("69"),
        "{man}"
    );

    // The shipped configuration is valid once the credentials beside it hold the URLs, and says where they go
    // when they do not.
    let jobs = tree.join("etc/cachewarden/jobs.toml");
    let output = Command::new(&binary)
        .arg("check")
        .arg("--config")
        .arg(&jobs)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("credential mysql-url"), "{stderr}");
    let credentials = tree.join("etc/cachewarden/credentials");
    std::fs::write(
        credentials.join("mysql-url"),
        "mysql://cachewarden@db.internal:3306/shop",
    )
    .unwrap();
    std::fs::write(credentials.join("redis-url"), "rediss://cache.internal:6379/0").unwrap();
    let (stdout, _) = run(Command::new(&binary).arg("check").arg("--config").arg(&jobs));
    assert!(stdout.contains("OK (0 warm jobs)"), "{stdout}");
}

/// The RPM for Amazon Linux 2023 (`scripts/package-rpm`, from this test build's binaries): the same files at the RPM
/// paths, the configuration as `%config(noreplace)`, the credentials directory root-only, upgrade scriptlets, no
/// glibc symbol newer than AL2023's 2.34, rpmlint without errors; signed with a key given, and installed into a
/// scratch root by rpm itself, its signature checked there.
#[test]
fn the_rpm_for_amazon_linux_2023_holds_the_same_files_needs_no_newer_glibc_and_passes_rpmlint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let version = env!("CARGO_PKG_VERSION");
    // A throwaway signing key, as a release would use its own (CACHEWARDEN_RPM_SIGN_KEY).
    let gnupg = tempfile::tempdir().unwrap();
    std::fs::set_permissions(gnupg.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let signer = "cachewarden test signing <packages@example.com>";
    run(Command::new("gpg").env("GNUPGHOME", gnupg.path()).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        signer,
        "rsa2048",
        "sign",
        "never",
    ]));
    let (public, _) = run(Command::new("gpg")
        .env("GNUPGHOME", gnupg.path())
        .args(["--armor", "--export", signer]));
    let (_out, rpm) = package(
        "package-rpm",
        &format!("cachewarden-{version}-1.amzn2023."),
        &[
            ("GNUPGHOME", gnupg.path().as_os_str()),
            ("CACHEWARDEN_RPM_SIGN_KEY", std::ffi::OsStr::new(signer)),
        ],
    );
    let rpm = rpm.as_path();
    let query = |args: &[&str]| run(Command::new("rpm").arg("-qp").args(args).arg(rpm)).0;
    let files = query(&["--list"]);
    for path in [
        "/usr/bin/cachewarden",
        "/usr/lib/systemd/system/cachewarden.service",
        "/usr/lib/systemd/system/cachewarden-credentials.service",
        "/usr/lib/cachewarden/fetch-credentials",
        "/etc/cachewarden/jobs.toml",
        "/etc/cachewarden/credentials",
        "/usr/share/man/man1/cachewarden.1.gz",
        "/usr/share/man/man1/cachewarden-binlog.1.gz",
        "/usr/share/bash-completion/completions/cachewarden",
        "/usr/share/zsh/site-functions/_cachewarden",
        "/usr/share/fish/vendor_completions.d/cachewarden.fish",
        "/usr/share/doc/cachewarden/aws.md",
        "/usr/share/licenses/cachewarden/copyright",
    ] {
        assert!(
            files.lines().any(|line| line == path),
            "the RPM has no {path}:\n{files}"
        );
    }
    assert_eq!(query(&["--configfiles"]).trim(), "/etc/cachewarden/jobs.toml");
    let long = query(&["--list", "-v"]);
    let credentials = long
        .lines()
        .find(|line| line.ends_with(" /etc/cachewarden/credentials"))
        .unwrap();
    assert!(credentials.starts_with("drwx------"), "{credentials}");
    let scripts = query(&["--scripts"]);
    assert!(
        scripts.contains("systemctl try-restart cachewarden.service") && scripts.contains("disable --now"),
        "{scripts}"
    );
    // AL2023 has glibc 2.34: the binary may need no symbol version newer than that.
    let requires = query(&["--requires"]);
    let glibc: Vec<(u32, u32)> = requires
        .lines()
        .filter_map(|line| line.split("(GLIBC_").nth(1)?.split(')').next())
        .filter_map(|version| {
            let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .collect();
    assert!(!glibc.is_empty(), "no glibc requirement computed:\n{requires}");
    let newest = glibc.iter().max().unwrap();
    assert!(
        *newest <= (2, 34),
        "needs GLIBC_{}.{} (AL2023 has 2.34):\n{requires}",
        newest.0,
        newest.1
    );

    let output = Command::new("rpmlint")
        .arg("-c")
        .arg(root.join("contrib/rpm/rpmlint.toml"))
        .arg(rpm)
        .output()
        .expect("rpmlint is installed by scripts/services");
    let (lint, lint_err) = text(&output);
    assert!(lint.contains(" 0 errors"), "rpmlint:\n{lint}{lint_err}");

    // Installed by rpm into a scratch root (its own database; scriptlets need a running systemd, so they are left
    // out), the signature verified against the imported key, then removed again.
    let scratch = tempfile::tempdir().unwrap();
    let in_root = |args: &[&str]| {
        Command::new("rpm")
            .arg("--root")
            .arg(scratch.path())
            .args(args)
            .output()
            .unwrap()
    };
    let key = gnupg.path().join("signing.asc");
    std::fs::write(&key, &public).unwrap();
    for args in [&["--initdb"][..], &["--import", key.to_str().unwrap()]] {
        let output = in_root(args);
        assert!(output.status.success(), "rpm {args:?}: {:?}", text(&output));
    }
    let checked = Command::new("rpm")
        .arg("--root")
        .arg(scratch.path())
        .arg("-K")
        .arg(rpm)
        .output()
        .unwrap();
    let (checked_out, checked_err) = text(&checked);
    assert!(
        checked.status.success() && checked_out.contains("signatures OK"),
        "rpm -K: {checked_out}{checked_err}"
    );
    let installed = Command::new("rpm")
        .arg("--root")
        .arg(scratch.path())
        .args(["-i", "--nodeps", "--noscripts"])
        .arg(rpm)
        .output()
        .unwrap();
    assert!(installed.status.success(), "rpm -i: {:?}", text(&installed));
    let (version_out, _) = run(Command::new(scratch.path().join("usr/bin/cachewarden")).arg("--version"));
    assert!(version_out.contains(version), "{version_out}");
    assert!(scratch.path().join("etc/cachewarden/jobs.toml").is_file());
    // The scripts need a shell the scratch root lacks: %post runs here, with a systemctl that does nothing. A first
    // install prints the credentials hint whether or not systemd runs (an image build); an upgrade does not.
    let post = query(&["--queryformat", "%{POSTIN}"]);
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("systemctl"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        stub.path().join("systemctl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        stub.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let post_with = |count: &str| run(Command::new("sh").args(["-c", &post, "sh", count]).env("PATH", &path)).0;
    assert!(
        post_with("1").contains("write /etc/cachewarden/credentials/mysql-url"),
        "{post}"
    );
    assert!(!post_with("2").contains("credentials"), "{post}");
    let removed = in_root(&["-e", "--noscripts", "cachewarden"]);
    assert!(removed.status.success(), "rpm -e: {:?}", text(&removed));
    assert!(!scratch.path().join("usr/bin/cachewarden").exists());
}

/// The container image definition (contrib/container/Containerfile; its base images cannot be pulled here): what
/// it copies exists, and the daemon finds its configuration and its URLs where the image puts them — the
/// configuration by CACHEWARDEN_CONFIG, the URLs in the secrets directory named by CREDENTIALS_DIRECTORY.
#[test]
fn the_container_image_definition_points_the_daemon_at_its_configuration_and_secrets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read_to_string(root.join("contrib/container/Containerfile")).unwrap();
    let example = root.join("contrib/jobs.example.toml");
    assert!(
        file.contains("COPY --from=build /src/contrib/jobs.example.toml /etc/cachewarden/jobs.toml")
            && example.is_file(),
        "{file}"
    );
    assert!(
        file.contains("CACHEWARDEN_CONFIG=/etc/cachewarden/jobs.toml")
            && file.contains("CREDENTIALS_DIRECTORY=/run/secrets"),
        "{file}"
    );
    assert!(file.contains("ENTRYPOINT [\"/usr/bin/cachewarden\"]"), "{file}");
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(
        secrets.path().join("mysql-url"),
        "mysql://shop:pw@db.example.com:3306/shop\n",
    )
    .unwrap();
    std::fs::write(secrets.path().join("redis-url"), "redis://cache.example.com:6379/0\n").unwrap();
    let check = |secrets: &Path| {
        Command::new(env!("CARGO_BIN_EXE_cachewarden"))
            .arg("check")
            .env("CACHEWARDEN_CONFIG", &example)
            .env("CREDENTIALS_DIRECTORY", secrets)
            .output()
            .unwrap()
    };
    let output = check(secrets.path());
    assert!(output.status.success(), "{:?}", text(&output));
    let empty = tempfile::tempdir().unwrap();
    let output = check(empty.path());
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("mysql"),
        "without the secrets it says what is missing: {stderr}"
    );
}

/// The container image built without a registry (scripts/container: FROM scratch, the stripped binary, its libraries,
/// the CA certificates, a nonroot user, no shell) starts as that user and passes `check --connect` against the test's
/// servers, the jobs file and the URLs mounted where contrib/container/Containerfile says. Podman keeps this test's
/// images in a storage of its own, removed after.
#[test]
fn the_container_image_builds_without_a_registry_and_passes_check_connect() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let services = common::services();
    let storage = tempfile::tempdir().unwrap();
    // vfs and cgroupfs: no overlay mounts or systemd needed; runc: crun refuses a cgroup v1/v2 hybrid like this one.
    let podman = format!(
        "podman --root {0}/root --runroot {0}/run --storage-driver vfs --cgroup-manager cgroupfs --runtime runc",
        storage.path().display()
    );
    let image = "localhost/cachewarden-test:latest";
    let (built, _) = run(Command::new(root.join("scripts/container"))
        .env("CACHEWARDEN_BIN", env!("CARGO_BIN_EXE_cachewarden"))
        .env("CACHEWARDEN_IMAGE", image)
        .env("CACHEWARDEN_PODMAN", &podman));
    assert_eq!(built.trim(), image);

    let mounts = tempfile::tempdir().unwrap();
    let secrets = mounts.path().join("credentials");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("mysql-url"), format!("{}/mysql\n", services.mysql)).unwrap();
    std::fs::write(secrets.join("redis-url"), format!("{}/0\n", services.redis)).unwrap();
    let jobs = mounts.path().join("jobs.toml");
    std::fs::write(
        &jobs,
        "[[warm]]\nname = \"one\"\nschedule = \"every 1h\"\nquery = \"SELECT 1 AS id\"\nkey = \"cw-container:{id}\"\nttl = \"1m\"\n",
    )
    .unwrap();
    // The image's user (65532) reads what is mounted.
    for path in [mounts.path(), &secrets] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let container = |args: &[&str]| {
        let mut command = Command::new("sh");
        let mounted = format!(
            "-v {}:/etc/cachewarden/jobs.toml:ro -v {}:/run/secrets:ro",
            jobs.display(),
            secrets.display()
        );
        command.args([
            "-c",
            &format!(
                "{podman} run --rm --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 {mounted} \
                 {image} \"$@\""
            ),
            "sh",
        ]);
        command.args(args);
        command.output().unwrap()
    };
    let checked = container(&["check", "--connect"]);
    let (out, err) = text(&checked);
    assert!(checked.status.success(), "check --connect in the image: {out}{err}");
    assert!(out.contains("1 warm job"), "{out}{err}");
    let user = container(&["--version"]);
    assert!(text(&user).0.contains(env!("CARGO_PKG_VERSION")), "{:?}", text(&user));
    // No shell in the image: only the binary runs.
    let shell = Command::new("sh")
        .args(["-c", &format!("{podman} run --rm --entrypoint /bin/sh {image} -c true")])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has a shell: {:?}", text(&shell));
}
