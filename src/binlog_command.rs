//! `cachewarden binlog status|set|reset`: the binlog listener's position shown to an operator and moved by one —
//! `set` and `reset` only while no daemon runs on this configuration (its admin endpoint answers, or an instance holds
//! the `[ha]` lease), since a running listener saves its own position over any other. Every change prints the old
//! and the new position.

use std::process::ExitCode;

use crate::cache::Cache;
use crate::cli::BinlogAction;
use crate::cli::exit::{CONFIG, FAILED, TEMPFAIL, UNAVAILABLE};
use crate::config::Config;
use crate::source::binlog::BinlogError;
use crate::source::binlog::position::{self, Inspection};

/// Runs the `binlog` subcommand; its exit code.
pub async fn run(config: &Config, action: &BinlogAction) -> ExitCode {
    let Some(settings) = &config.binlog else {
        eprintln!(
            "error: {} has no [binlog] section: there is no position to show or move",
            config.path.display()
        );
        return ExitCode::from(CONFIG);
    };
    let cache = match Cache::connect(&config.redis).await {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("error: Redis at {}: {error}", config.redis.url);
            return ExitCode::from(UNAVAILABLE);
        }
    };
    if !matches!(action, BinlogAction::Status)
        && let Some(running) = running(config, &cache).await
    {
        eprintln!(
            "error: {running}: a running listener saves its own position over this one. Stop it first (systemctl \
             stop cachewarden, and every [ha] instance), then run this again; the next start reads from the new \
             position"
        );
        return ExitCode::from(TEMPFAIL);
    }
    let outcome = match action {
        BinlogAction::Status => position::inspect(settings, &cache).await.map(|inspection| {
            print!("{}", status_text(&inspection));
        }),
        BinlogAction::Set { file, pos, gtid } => {
            let set = match (file, pos, gtid) {
                (_, _, Some(gtid)) => position::set_gtid(settings, &cache, gtid).await,
                (Some(file), Some(pos), None) => position::set(settings, &cache, file, *pos).await,
                _ => unreachable!("clap asks for --file and --pos, or --gtid"),
            };
            set.map(|(old, new)| {
                tracing::info!(old = ?old.as_ref().map(ToString::to_string), new = %new, "The binlog checkpoint was set by hand.");
                println!("checkpoint: {} → {new}", old.map_or("none".to_string(), |old| old.to_string()));
                match &new.gtid {
                    Some(gtid) if new.file.is_empty() => {
                        println!("the next start reads the binlog after the transactions of {gtid}")
                    }
                    _ => println!("the next start reads the binlog from {}:{}", new.file, new.pos),
                }
            })
        }
        BinlogAction::Reset => position::reset(settings, &cache).await.map(|old| {
            tracing::info!(old = ?old.as_ref().map(ToString::to_string), "The binlog checkpoint was removed by hand.");
            println!(
                "checkpoint: {} → none",
                old.map_or("none".to_string(), |old| old.to_string())
            );
            println!(
                "the next start begins at the server's current position and recovers as after a gap (on_gap = {:?})",
                settings.on_gap
            );
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(match error {
                BinlogError::Transient(_) => UNAVAILABLE,
                BinlogError::AccessDenied(_) => CONFIG,
                _ => FAILED,
            })
        }
    }
}

/// Who is running on this configuration, if anyone: the admin endpoint answering, or the `[ha]` lease held.
async fn running(config: &Config, cache: &Cache) -> Option<String> {
    let addr = config.admin.listen;
    if config.admin.enabled
        && let Ok(reply) = crate::admin::request(addr, hyper::Method::GET, "/healthz").await
        && reply.status == 200
    {
        return Some(format!("a daemon is running (its admin endpoint answers at {addr})"));
    }
    let ha = config.ha.as_ref()?;
    match cache.get(&ha.key).await {
        Ok(Some(_)) => Some(format!("an instance holds the [ha] lease ({})", ha.key)),
        _ => None,
    }
}

/// `binlog status` for people.
fn status_text(inspection: &Inspection) -> String {
    let mut text = String::new();
    let checkpoint = inspection.checkpoint.as_ref().map_or(
        "none (the next start begins at the server's position and recovers as after a gap)".into(),
        |c| c.to_string(),
    );
    text.push_str(&format!("checkpoint: {checkpoint}\n"));
    text.push_str(&format!("server:     {}\n", inspection.server));
    match (inspection.checkpoint_on_server(), inspection.bytes_behind()) {
        (Some(true), Some(behind)) => text.push_str(&format!("behind:     {behind} bytes of binlog\n")),
        (Some(false), _) => text.push_str(
            "behind:     the checkpoint's file is no longer on the server (purged): the next start is a gap\n",
        ),
        _ => text.push_str("behind:     another server's offset: the next start resumes by its GTID position\n"),
    }
    let files: Vec<&str> = inspection.files.iter().map(|(file, _)| file.as_str()).collect();
    text.push_str(&format!(
        "files:      {} ({} … {})\n",
        files.len(),
        files.first().unwrap_or(&"-"),
        files.last().unwrap_or(&"-")
    ));
    text.push_str(&format!("retention:  {}\n", inspection.retention.can_be_down_for()));
    for warning in &inspection.warnings {
        text.push_str(&format!("warning:    {warning}\n"));
    }
    text
}
