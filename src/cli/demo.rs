//! The demo shop: creates the database named in `[mysql] url` if needed and applies the embedded migrations in
//! `migrations/` (products, users, sessions, orders and their seed data). For the quick start and tests only; the
//! daemon itself never changes a schema.

use sqlx::ConnectOptions as _;
use sqlx::Executor as _;
use sqlx::mysql::MySqlConnectOptions;

use crate::config::MysqlSettings;

/// The demo shop's schema and seed data.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database if it is missing, then applies any pending demo migrations.
pub(crate) async fn init(settings: &MysqlSettings) -> anyhow::Result<()> {
    let options: MySqlConnectOptions = crate::exec::database::connect_options(settings)?;
    let database = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("[mysql] url names no database (mysql://user@host:3306/DATABASE)"))?
        .to_string();
    if database.contains('`') {
        anyhow::bail!("database name {database:?} contains a backtick");
    }
    let mut server = options.clone().database("information_schema").connect().await?;
    server
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE IF NOT EXISTS `{database}`"
        )))
        .await?;
    drop(server);
    let mut conn = options.connect().await?;
    MIGRATOR.run(&mut conn).await?;
    Ok(())
}
