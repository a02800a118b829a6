//! The server settings following a binlog depends on, judged: what must change before the daemon can follow it
//! (refused), what it should change (warned: failover by GTID, binlog retention), how long the daemon may be down
//! without a re-warm, and each finding's advice naming where to set it — the DB parameter group on RDS, the DB
//! cluster parameter group on Aurora MySQL, the server's configuration file elsewhere.
//!
//! Pure: `server` reads the variables ([`WATCHED`]) and hands them in.

use std::collections::BTreeMap;
use std::time::Duration;

/// The global variables judged here, read in one `SHOW GLOBAL VARIABLES` (a server lists those it has).
pub(super) const WATCHED: &[&str] = &[
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_row_value_options",
    "gtid_mode",
    "enforce_gtid_consistency",
    "binlog_expire_logs_seconds",
    "binlog_expire_logs_auto_purge",
    "expire_logs_days",
    "aurora_version",
    "basedir",
];

/// Under this retention the daemon warns: a restart, a deploy or an instance replacement takes longer.
pub(crate) const SHORT_RETENTION: Duration = Duration::from_secs(3600);

/// Where the server runs, which decides where its settings are changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Platform {
    /// Aurora MySQL: binlog settings live in the DB cluster parameter group.
    Aurora,
    /// RDS for MySQL or MariaDB: the DB parameter group.
    Rds,
    /// A server of one's own: its configuration file.
    SelfManaged { mariadb: bool },
}

/// What the server told.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Variable (lowercase) → value, for the [`WATCHED`] ones the server has.
    pub variables: BTreeMap<String, String>,
    pub mariadb: bool,
    /// `mysql.rds_configuration`'s 'binlog retention hours': `None` when the table could not be read (not RDS, or
    /// no SELECT on it), `Some(None)` for NULL (RDS purges binlogs as soon as it can).
    pub rds_retention_hours: Option<Option<u64>>,
}

/// How long the server keeps binlog files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retention {
    /// Until purged by hand.
    Unlimited,
    Kept(Duration),
    /// Not known (an RDS retention the user may not read).
    Unknown,
}

impl Retention {
    /// For people: how long the daemon may be down before its position is purged.
    pub(crate) fn can_be_down_for(&self) -> String {
        match self {
            Retention::Unlimited => {
                "binlogs never expire here: the daemon can be down any time without a re-warm".into()
            }
            Retention::Kept(kept) => format!(
                "binlogs are kept {}: the daemon can be down that long without a re-warm",
                crate::pure::words::duration(*kept)
            ),
            Retention::Unknown => "binlog retention unknown: how long the daemon can be down is not known".into(),
        }
    }

    /// Seconds for the metric: infinite when never purged, `None` when unknown.
    pub(crate) fn seconds(&self) -> Option<f64> {
        match self {
            Retention::Unlimited => Some(f64::INFINITY),
            Retention::Kept(kept) => Some(kept.as_secs_f64()),
            Retention::Unknown => None,
        }
    }
}

/// The judgement: refusals stop the daemon, warnings are logged and shown.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub refusals: Vec<String>,
    pub warnings: Vec<String>,
}

impl Observed {
    fn get(&self, variable: &str) -> Option<&str> {
        self.variables.get(variable).map(String::as_str)
    }

    pub(super) fn platform(&self) -> Platform {
        if self.get("aurora_version").is_some() {
            Platform::Aurora
        } else if self.rds_retention_hours.is_some() || self.get("basedir").is_some_and(|b| b.starts_with("/rdsdbbin"))
        {
            Platform::Rds
        } else {
            Platform::SelfManaged { mariadb: self.mariadb }
        }
    }

    /// How long binlog files are kept: RDS's own setting where it exists (the server's variables are ignored there),
    /// else `binlog_expire_logs_seconds`, else `expire_logs_days`; 0 means never purged.
    pub(super) fn retention(&self) -> Retention {
        match self.rds_retention_hours {
            Some(Some(hours)) => return Retention::Kept(Duration::from_secs(hours * 3600)),
            Some(None) => return Retention::Kept(Duration::ZERO),
            // RDS or Aurora whose table this user may not read: their own variables do not say.
            None if matches!(self.platform(), Platform::Aurora | Platform::Rds) => return Retention::Unknown,
            None => {}
        }
        if self.get("binlog_expire_logs_auto_purge").is_some_and(is_off) {
            return Retention::Unlimited;
        }
        let seconds = self
            .get("binlog_expire_logs_seconds")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0);
        let days = self
            .get("expire_logs_days")
            .and_then(|d| d.parse::<f64>().ok())
            .filter(|d| *d > 0.0)
            .map(|d| d * 86_400.0);
        match seconds.or(days) {
            Some(seconds) => Retention::Kept(Duration::from_secs_f64(seconds)),
            None => Retention::Unlimited,
        }
    }

    /// Every setting held against what the daemon needs.
    pub(super) fn judge(&self) -> Judged {
        let platform = self.platform();
        let mut judged = Judged::default();
        let value = |variable: &str| self.get(variable).unwrap_or("").to_string();
        if !matches!(value("log_bin").as_str(), "1" | "ON") {
            judged.refusals.push(format!(
                "binary logging is off (log_bin is {:?}): {}",
                value("log_bin"),
                binary_logging_advice(platform)
            ));
        }
        let needed = [
            ("binlog_format", "ROW", "statement events do not say which rows changed"),
            (
                "binlog_row_image",
                "FULL",
                "both images with every column, for old keys and when_changed",
            ),
            (
                "binlog_row_metadata",
                "FULL",
                "column names in the events (MySQL >= 8.0.1, MariaDB >= 10.5), so DDL is followed exactly",
            ),
        ];
        for (variable, wanted, why) in needed {
            let found = value(variable);
            if !found.eq_ignore_ascii_case(wanted) {
                judged.refusals.push(format!(
                    "{variable} must be {wanted}, it is {found:?} ({why}): {}",
                    set(platform, variable, wanted)
                ));
            }
        }
        if value("binlog_row_value_options")
            .to_ascii_uppercase()
            .contains("PARTIAL_JSON")
        {
            judged.refusals.push(format!(
                "binlog_row_value_options must be empty (PARTIAL_JSON events carry JSON diffs, not the values): {}",
                set(platform, "binlog_row_value_options", "''")
            ));
        }
        if !self.mariadb {
            let off: Vec<&str> = ["gtid_mode", "enforce_gtid_consistency"]
                .into_iter()
                .filter(|variable| !value(variable).eq_ignore_ascii_case("ON"))
                .collect();
            if !off.is_empty() {
                judged.warnings.push(format!(
                    "{} not ON: after a failover (Multi-AZ, a promoted replica) the listener cannot resume by GTID, \
                     which is a gap and a re-warm: {} (gtid_mode goes OFF → OFF_PERMISSIVE → ON_PERMISSIVE → ON, one \
                     step at a time)",
                    off.join(" and "),
                    set(platform, "gtid_mode", "ON and enforce_gtid_consistency = ON")
                ));
            }
        }
        match self.retention() {
            Retention::Kept(kept) if kept < SHORT_RETENTION => judged.warnings.push(format!(
                "binlogs are kept {}: a daemon down longer than that (a restart, a deploy, an instance replacement) \
                 finds its position purged, a gap and a re-warm: {}",
                crate::pure::words::duration(kept),
                retention_advice(platform, self.mariadb)
            )),
            Retention::Unknown => judged.warnings.push(format!(
                "binlog retention is unknown (mysql.rds_configuration could not be read): check it with CALL \
                 mysql.rds_show_configuration, and grant SELECT ON mysql.rds_configuration to see it here; {}",
                retention_advice(platform, self.mariadb)
            )),
            _ => {}
        }
        judged
    }
}

fn is_off(value: &str) -> bool {
    matches!(value.to_ascii_uppercase().as_str(), "0" | "OFF")
}

/// Where `variable = value` is set on `platform`.
fn set(platform: Platform, variable: &str, value: &str) -> String {
    match platform {
        Platform::Aurora => format!(
            "set {variable} = {value} in the DB cluster parameter group (Aurora MySQL reads binlog settings only \
             there) and reboot the writer"
        ),
        Platform::Rds => format!("set {variable} = {value} in the instance's DB parameter group and reboot it"),
        Platform::SelfManaged { mariadb } => format!(
            "set {variable} = {value} under [{}] in the server's configuration file and restart it",
            if mariadb { "mariadb" } else { "mysqld" }
        ),
    }
}

fn binary_logging_advice(platform: Platform) -> String {
    match platform {
        Platform::Aurora => "set binlog_format = ROW in the DB cluster parameter group (Aurora MySQL logs binlogs \
                             only when it is not OFF) and reboot the writer"
            .into(),
        Platform::Rds => "turn on automated backups (a backup retention period over 0 days): RDS keeps a binary log \
                          only then"
            .into(),
        Platform::SelfManaged { .. } => "start the server with log_bin".into(),
    }
}

fn retention_advice(platform: Platform, mariadb: bool) -> String {
    match platform {
        Platform::Aurora | Platform::Rds => {
            "CALL mysql.rds_set_configuration('binlog retention hours', 24); (NULL, the default, purges them as soon \
             as possible)"
                .into()
        }
        Platform::SelfManaged { .. } => format!(
            "set binlog_expire_logs_seconds = 86400 (or more) under [{}] in the server's configuration file",
            if mariadb { "mariadb" } else { "mysqld" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(mariadb: bool, pairs: &[(&str, &str)]) -> Observed {
        let mut variables: BTreeMap<String, String> = [
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
            ("gtid_mode", "ON"),
            ("enforce_gtid_consistency", "ON"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            variables.insert(k.to_string(), v.to_string());
        }
        Observed {
            variables,
            mariadb,
            rds_retention_hours: None,
        }
    }

    #[test]
    fn a_server_set_as_needed_with_a_day_of_binlogs_passes() {
        let server = observed(false, &[("binlog_expire_logs_seconds", "86400")]);
        let judged = server.judge();
        assert!(judged.refusals.is_empty() && judged.warnings.is_empty(), "{judged:?}");
        assert_eq!(server.retention(), Retention::Kept(Duration::from_secs(86_400)));
    }

    #[test]
    fn each_refusal_says_what_to_set_and_where_for_the_platform() {
        let aurora = observed(false, &[("aurora_version", "3.08.0"), ("binlog_format", "MIXED")]);
        let judged = aurora.judge();
        assert_eq!(judged.refusals.len(), 1, "{judged:?}");
        assert!(judged.refusals[0].contains("binlog_format must be ROW, it is \"MIXED\""));
        assert!(judged.refusals[0].contains("DB cluster parameter group"));

        let mut rds = observed(false, &[("binlog_row_image", "MINIMAL"), ("log_bin", "OFF")]);
        rds.rds_retention_hours = Some(Some(24));
        let judged = rds.judge();
        assert_eq!(judged.refusals.len(), 2, "{judged:?}");
        assert!(judged.refusals[0].contains("automated backups"));
        assert!(judged.refusals[1].contains("instance's DB parameter group"));

        let own = observed(true, &[("binlog_row_metadata", "MINIMAL")]);
        assert!(own.judge().refusals[0].contains("under [mariadb]"));
        let json = observed(false, &[("binlog_row_value_options", "PARTIAL_JSON")]);
        assert!(json.judge().refusals[0].contains("PARTIAL_JSON"));
    }

    #[test]
    fn gtids_off_on_mysql_is_a_warning_not_a_refusal() {
        let server = observed(
            false,
            &[("gtid_mode", "OFF_PERMISSIVE"), ("basedir", "/rdsdbbin/mysql-8.0.40/")],
        );
        let judged = server.judge();
        assert!(judged.refusals.is_empty());
        assert_eq!(
            judged.warnings.len(),
            2,
            "GTIDs and the RDS retention nobody may read: {judged:?}"
        );
        assert!(judged.warnings[0].contains("gtid_mode not ON"));
        assert!(judged.warnings[1].contains("rds_show_configuration"));
        // MariaDB always has GTIDs.
        assert!(observed(true, &[("gtid_mode", "")]).judge().warnings.is_empty());
    }

    #[test]
    fn retention_comes_from_rds_where_it_exists_else_the_server() {
        let mut rds = observed(false, &[("binlog_expire_logs_seconds", "2592000")]);
        rds.rds_retention_hours = Some(None);
        assert_eq!(rds.retention(), Retention::Kept(Duration::ZERO), "NULL purges at once");
        let warnings = rds.judge().warnings;
        assert!(
            warnings[0].contains("rds_set_configuration('binlog retention hours', 24)"),
            "{warnings:?}"
        );
        rds.rds_retention_hours = Some(Some(168));
        assert_eq!(rds.retention(), Retention::Kept(Duration::from_secs(168 * 3600)));

        assert_eq!(observed(false, &[]).retention(), Retention::Unlimited);
        let days = observed(true, &[("expire_logs_days", "0.5")]);
        assert_eq!(days.retention(), Retention::Kept(Duration::from_secs(43_200)));
        let never = observed(
            false,
            &[
                ("binlog_expire_logs_seconds", "600"),
                ("binlog_expire_logs_auto_purge", "OFF"),
            ],
        );
        assert_eq!(never.retention(), Retention::Unlimited);
        let short = observed(false, &[("binlog_expire_logs_seconds", "600")]);
        let warnings = short.judge().warnings;
        assert!(warnings[0].contains("kept 10m"), "{warnings:?}");
        assert!(warnings[0].contains("binlog_expire_logs_seconds = 86400"));
    }
}
