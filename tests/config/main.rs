//! Configuration: the shipped jobs.toml, every problem reported at once with file, line, job and field, and
//! environment overrides.

mod partitions;
mod reporting;
mod sections;
mod sources;
mod values;

use std::collections::HashMap;
use std::path::Path;

use cachewarden::config::{self, ConfigError, Problem};
use cachewarden::pure::model::{Jitter, Ttl};

const CONNECTIONS: &str =
    "[mysql]\nurl = \"mysql://app:s3cret@db:3306/shop\"\n\n[redis]\nurl = \"redis://cache:6379/0\"\n";

fn problems(source: &str) -> Vec<Problem> {
    problems_with_env(source, HashMap::new())
}

fn problems_with_env(source: &str, env: HashMap<String, String>) -> Vec<Problem> {
    match config::load_str(Path::new("jobs.toml"), source, env) {
        Ok(_) => panic!("config should be invalid:\n{source}"),
        Err(error) => error.problems().to_vec(),
    }
}

fn find<'a>(problems: &'a [Problem], location: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.location == location)
        .unwrap_or_else(|| panic!("no problem at {location}; got {problems:#?}"))
}
