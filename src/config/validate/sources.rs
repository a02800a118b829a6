//! `[binlog]` or `[[binlog]]`: the binlog sources a configuration follows, each with a name, and the source each rule
//! and job names.

use std::collections::HashMap;

use super::entry::Entry;
use super::*;
use crate::config::{derive_settings_of, home_database_of, source_named};

/// The name of the one source a `[binlog]` table declares, unless it has a `name`.
pub(crate) const MAIN_SOURCE: &str = "main";

/// One binlog source being validated: how problems name it and what its defaults depend on.
pub(super) struct Source {
    /// Its name (`main` for a `[binlog]` table without one).
    pub name: Arc<str>,
    /// Where its problems are located: `binlog` for the table, `binlog[1]` for an entry of `[[binlog]]`.
    pub section: String,
    /// Declared as an entry of `[[binlog]]`: its name goes into its checkpoint's and replica id's defaults.
    pub array: bool,
}

impl Source {
    /// How logs, readiness and the daemon's tasks name it: `binlog`, or `binlog orders` for a source of `[[binlog]]`.
    pub(super) fn label(&self) -> Arc<str> {
        match self.array {
            false => "binlog".into(),
            true => format!("binlog {}", self.name).into(),
        }
    }
}

/// The sources a configuration declares.
#[derive(Default)]
pub(super) struct Sources {
    /// Those enabled, in file order.
    pub followed: Vec<BinlogSettings>,
    /// Those with `enabled = false`: named in a rule or job, they are refused with that reason.
    disabled: Vec<Arc<str>>,
    /// Declared as `[[binlog]]` (their names go into their replica ids).
    pub array: bool,
}

impl Sources {
    fn names(&self) -> Vec<&str> {
        self.followed.iter().map(|source| &*source.name).collect()
    }
}

impl Context {
    /// The binlog sources: a `[binlog]` table (named `main` unless it says otherwise) or each entry of `[[binlog]]`
    /// (each named by its `name`), checked on their own and then against each other: names, checkpoints and servers
    /// are each one source's. Under `[ha]` (`ha`), every checkpoint is kept in Redis.
    pub(super) fn binlogs(&mut self, doc: &toml::Table, mysql: Option<&MysqlSettings>, ha: bool) -> Sources {
        let mut sources = Sources::default();
        let declared: Vec<(Source, RawBinlog)> = match doc.get("binlog") {
            None => Vec::new(),
            Some(toml::Value::Table(_)) => {
                let raw: RawBinlog = self.section(doc, "binlog");
                let name = match raw.name.clone() {
                    Some(name) => self.source_name("binlog", name),
                    None => Some(MAIN_SOURCE.to_string()),
                };
                name.map(|name| {
                    let source = Source {
                        name: name.into(),
                        section: "binlog".into(),
                        array: false,
                    };
                    (source, raw)
                })
                .into_iter()
                .collect()
            }
            Some(toml::Value::Array(items)) => {
                sources.array = true;
                self.binlog_entries(items)
            }
            Some(_) => {
                let message = "must be a table, written `[binlog]`, or an array of tables, written `[[binlog]]`";
                self.problem(self.lines.key_line(None, "binlog"), "binlog".into(), message.into());
                Vec::new()
            }
        };
        let mut sections = Vec::new();
        for (source, mut raw) in declared {
            if !self.flag(&source.section, "enabled", raw.enabled.take(), true) {
                sources.disabled.push(source.name);
                continue;
            }
            let Some(settings) = self.binlog(&source, raw, mysql) else {
                continue;
            };
            if ha && matches!(settings.checkpoint, CheckpointStore::File(_)) {
                let message = "must be \"redis\" with [ha]: every instance resumes from the same checkpoint";
                self.field_problem(&source.section, "checkpoint", message.into());
            }
            self.distinct_source(&source, &settings, &sources.followed);
            sources.followed.push(settings);
            sections.push(source.section);
        }
        if let ([only], [section]) = (sources.followed.as_slice(), sections.as_slice())
            && only.read_url.is_some()
        {
            let message = "is for a source whose jobs read a server of their own beside other sources: with one \
                           source, jobs read [mysql] url; set it there";
            self.field_problem(section, "read_url", message.into());
        }
        sources
    }

    /// Each entry of `[[binlog]]` with its name (required, and each one's own).
    fn binlog_entries(&mut self, items: &[toml::Value]) -> Vec<(Source, RawBinlog)> {
        let mut declared: Vec<(Source, RawBinlog)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let entry = Entry::new("binlog", index, item, "name");
            let section = format!("binlog[{index}]");
            let raw = entry.read::<RawBinlog>(self, item);
            self.entries.insert(section.clone(), entry);
            let Some(raw) = raw else { continue };
            let name = match raw.name.clone() {
                Some(name) => self.source_name(&section, name),
                None => {
                    let message = "is required in each [[binlog]] source: rules, metrics, checkpoints and replica ids \
                                   are told apart by it (name = \"orders\")";
                    self.field_problem(&section, "name", message.into());
                    None
                }
            };
            let Some(name) = name else { continue };
            if declared.iter().any(|(other, _)| *other.name == *name) {
                let message = format!("another [[binlog]] source is already named \"{name}\"");
                self.field_problem(&section, "name", message);
                continue;
            }
            let source = Source {
                name: name.into(),
                section,
                array: true,
            };
            declared.push((source, raw));
        }
        declared
    }

    /// A source's `name`: letters, digits, `_` and `-` (it goes into Redis keys, metric labels and file names).
    fn source_name(&mut self, section: &str, name: String) -> Option<String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            return Some(name);
        }
        let message = format!("\"{name}\" is not a source name: use 1 to 64 letters, digits, `_` or `-`");
        self.field_problem(section, "name", message);
        None
    }

    /// Two sources never share a checkpoint (each would rewind the other) or a server (its changes would be applied
    /// twice).
    fn distinct_source(&mut self, source: &Source, settings: &BinlogSettings, before: &[BinlogSettings]) {
        if let Some(other) = before.iter().find(|other| other.checkpoint == settings.checkpoint) {
            let message = format!(
                "is the checkpoint of the source \"{}\" too: give each source its own (or leave it out: each source's \
                 default has its name)",
                other.name
            );
            let field = match settings.checkpoint {
                CheckpointStore::Redis(_) => "checkpoint_key",
                CheckpointStore::File(_) => "checkpoint_file",
            };
            self.field_problem(&source.section, field, message);
        }
        let server = server_address(&settings.url);
        if let Some(other) = before
            .iter()
            .find(|other| server.is_some() && server_address(&other.url) == server)
        {
            let message = format!(
                "{} is the server of the source \"{}\" too: one source follows each server (its rules can name any \
                 of its tables); without `url` a source follows [mysql] url's",
                server.unwrap_or_default(),
                other.name
            );
            self.field_problem(&source.section, "url", message);
        }
    }

    /// The source a rule or a job names in `source` (`raw`), at `entry`: `None` for the only one. With several,
    /// a rule must name one, and so must a job that `needs` one (it derives rules).
    pub(super) fn source_ref(
        &mut self,
        entry: &Entry,
        raw: Option<String>,
        sources: &Sources,
        needs: bool,
    ) -> Option<Arc<str>> {
        let names = sources.names();
        let Some(name) = raw else {
            if needs && names.len() > 1 {
                let message = format!(
                    "is required with several [[binlog]] sources: name the one whose changes {} follows ({})",
                    if entry.at.starts_with("warm") {
                        "the job's derived rules"
                    } else {
                        "this rule"
                    },
                    quoted(&names, "or")
                );
                entry.problem(self, Some("source"), message);
            }
            return None;
        };
        if let Some(source) = sources.followed.iter().find(|source| *source.name == name) {
            return Some(source.name.clone());
        }
        let message = if sources.disabled.iter().any(|disabled| **disabled == name) {
            format!("the binlog source \"{name}\" is disabled (enabled = false)")
        } else if names.is_empty() {
            format!("names the binlog source \"{name}\", but there is no enabled [binlog]")
        } else {
            format!(
                "no binlog source is named \"{name}\"{} (the sources: {})",
                crate::pure::words::did_you_mean(&name, names.iter().copied()),
                quoted(&names, "and")
            )
        };
        entry.problem(self, Some("source"), message);
        None
    }
}

/// What the binlog sources settle for the jobs and rules: the lookups' fan-out (their source's), each job's
/// `derive_rules` (its own, else its source's), and the rules in effect once the derived ones are added. With
/// several sources, a job that derives rules must name its source.
pub(super) fn follow_binlog(
    ctx: &mut Context,
    doc: &toml::Table,
    sources: &Sources,
    mysql: &MysqlSettings,
    jobs: &mut [WarmJob],
    mut rules: Vec<ChangeRule>,
) -> Vec<ChangeRule> {
    let followed = &sources.followed;
    for rule in &mut rules {
        if let (Some(lookup), Some(source)) = (&mut rule.lookup, source_named(followed, rule.source.as_deref())) {
            Arc::make_mut(lookup).max_fanout = source.max_fanout;
        }
    }
    // A job without its own `derive_rules` takes its source's.
    let items = match doc.get("warm") {
        Some(toml::Value::Array(items)) => items.as_slice(),
        _ => &[],
    };
    let index_of: HashMap<&str, usize> = (items.iter().enumerate())
        .filter_map(|(index, item)| Some((item.get("name")?.as_str()?, index)))
        .collect();
    for job in jobs.iter_mut() {
        let index = index_of.get(&*job.name).copied();
        let own = index.is_some_and(|index| items[index].get("derive_rules").is_some());
        if !own {
            job.derive_rules = source_named(followed, job.source.as_deref()).is_some_and(|source| source.derive_rules);
        }
        if job.derive_rules
            && job.source.is_none()
            && followed.len() > 1
            && let Some(index) = index
        {
            let entry = Entry::new("warm", index, &items[index], "name");
            ctx.source_ref(&entry, None, sources, true);
        }
    }
    let coverage = crate::pure::derive::cover(
        jobs,
        &rules,
        &|job: &WarmJob| home_database_of(mysql, followed, job),
        &|job: &WarmJob| derive_settings_of(followed, job),
        &crate::pure::derive::schema::Schema::default(),
    );
    crate::pure::derive::effective_rules(&rules, &coverage, jobs)
}

/// `"a", "b" or "c"` (with `or`).
fn quoted(names: &[&str], or: &str) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} {or} {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// `host:port` of a MySQL URL, as the servers a source may follow are told apart.
pub(crate) fn server_address(url: &SecretUrl) -> Option<String> {
    let options = url.expose().parse::<sqlx::mysql::MySqlConnectOptions>().ok()?;
    Some(format!("{}:{}", options.get_host(), options.get_port()))
}
