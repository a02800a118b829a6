//! The real binary: `check`, `jobs`, `run --once` exit codes and output, and the daemon's schedule, signals and
//! patience with a Redis that is not there yet.

mod check;
#[path = "../common/mod.rs"]
mod common;
mod daemon;
mod journal;
mod one_shot;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestEnv, cachewarden, cli_output, eventually, get, job, sample, text, wait_exit};

const PRODUCTS: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO products VALUES (1, 'Kettle', 19.90), (2, 'Lamp', 5.00)
";

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}
