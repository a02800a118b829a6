//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the `migrations/` folder at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
