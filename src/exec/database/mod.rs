//! MySQL/MariaDB through sqlx: the connection pools warm jobs read from (`[mysql]`'s, and each binlog source's own
//! with `read_url`), statement timeouts, and raw row access.
//!
//! Owns every sqlx call except the demo schema's migrations (`demo`). It hands rows out as raw binary-protocol bytes;
//! turning those into JSON is `value`'s job. Sessions are read-only and run in UTC, so a warm query can never write
//! and TIMESTAMP values render the same whatever the server's time zone.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::pool::PoolConnection;
use sqlx::{
    AssertSqlSafe, Column as _, Connection as _, Executor as _, Row as _, SqlSafeStr as _, TypeInfo as _, ValueRef as _,
};
use tokio::sync::OnceCell;

use crate::config::{MysqlSettings, SslMode};
use crate::pure::model::WarmJob;
use crate::pure::render::ColumnInfo;

mod schema;

/// Idle connections are closed after this long: warm jobs are minutes apart and RDS counts connections.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long closing the pool may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A database failure, classified by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// No connection could be had (server down, network, pool exhausted): retry later.
    #[error("cannot reach MySQL: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// The server refused the statement (syntax, missing table, privileges): retrying will not help.
    #[error("MySQL refused the query: {0}")]
    Refused(#[source] sqlx::Error),
    /// The statement ran out of time, or the connection broke mid-query: may succeed later.
    #[error("MySQL query failed: {0}")]
    Interrupted(#[source] sqlx::Error),
}

impl DatabaseError {
    /// Whether no connection could be had at all (as opposed to a refusal or a failed query): exit 69.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, DatabaseError::Unreachable(_))
    }

    /// Whether trying again later may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        !matches!(self, DatabaseError::Refused(_))
    }

    fn from_query(error: sqlx::Error) -> Self {
        crate::telemetry::metrics::mysql_error();
        match &error {
            // Lock wait timeout, deadlock, statement timeouts, server shutdown: worth another try.
            sqlx::Error::Database(db) if is_transient_code(db.as_ref()) => DatabaseError::Interrupted(error),
            sqlx::Error::Database(_) => DatabaseError::Refused(error),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => DatabaseError::Unreachable(error),
            _ => DatabaseError::Interrupted(error),
        }
    }
}

/// MySQL's "Access denied for user" (1045): a wrong or rotated password.
fn is_access_denied(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|e| e.number() == 1045))
}

fn is_transient_code(error: &dyn sqlx::error::DatabaseError) -> bool {
    let number = error
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|e| e.number());
    matches!(number, Some(1205 | 1213 | 1969 | 3024 | 1053 | 1317 | 2013))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    MariaDb,
    MySql,
}

/// The database warm jobs read. Cheap to clone; every clone shares the pool, and [`Database::replace`] swaps it for
/// all of them (a SIGHUP that changed `[mysql]`, a rotated password).
#[derive(Clone)]
pub struct Database {
    current: Arc<RwLock<Arc<Pool>>>,
    /// Reads `[mysql]` again from where it came (the file, the credentials directory), after an access denied.
    reread: Option<Reread>,
    /// The servers of the binlog sources whose jobs read a server of their own (`read_url`), by source name; shared
    /// by every clone, set with [`Database::set_readers`]. A job of such a source reads through [`Database::of`].
    readers: Arc<RwLock<HashMap<Arc<str>, Database>>>,
}

/// Re-reads the `[mysql]` settings (the configuration file and its credentials), `None` when it cannot.
pub(crate) type Reread = Arc<dyn Fn() -> Option<MysqlSettings> + Send + Sync>;

/// One pool and what goes with it.
struct Pool {
    pool: MySqlPool,
    settings: MysqlSettings,
    /// Kept to open one connection outside the pool when the pool can only say it timed out.
    options: MySqlConnectOptions,
    flavor: OnceCell<Flavor>,
}

impl Pool {
    fn new(settings: &MysqlSettings) -> Result<Self, DatabaseError> {
        let options = connect_options(settings)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.connect_timeout)
            .idle_timeout(IDLE_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET time_zone = '+00:00'").await?;
                    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            settings: settings.clone(),
            options,
            flavor: OnceCell::new(),
        })
    }
}

impl Database {
    /// Creates the pool without connecting; the first query connects.
    pub fn new(settings: &MysqlSettings) -> Result<Self, DatabaseError> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(Pool::new(settings)?))),
            reread: None,
            readers: Arc::default(),
        })
    }

    /// `[mysql]`'s database and the servers of the binlog sources whose jobs read their own (`read_url`), without
    /// connecting.
    pub(crate) fn of_config(config: &crate::config::Config) -> Result<Self, DatabaseError> {
        let db = Self::new(&config.mysql)?;
        db.set_readers(&config.readers())?;
        Ok(db)
    }

    /// The database `job` reads: its source's server when that source has a `read_url`, else this one.
    pub(crate) fn of(&self, job: &WarmJob) -> Database {
        self.of_source(job.source.as_deref())
    }

    /// The database the jobs of binlog source `source` read (`None`: this one).
    pub(crate) fn of_source(&self, source: Option<&str>) -> Database {
        let readers = self.readers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        source.and_then(|source| readers.get(source)).unwrap_or(self).clone()
    }

    /// Sets the servers the sources' jobs read (`(source, settings)` for each source with a `read_url`): a source's
    /// pool is kept while its settings stay, replaced when they change, closed when the source no longer has one.
    /// Whether anything changed.
    pub(crate) fn set_readers(&self, readers: &[(Arc<str>, MysqlSettings)]) -> Result<bool, DatabaseError> {
        let mut current = self.readers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut changed = false;
        for (source, settings) in readers {
            match current.get(source) {
                Some(reader) => changed |= reader.replace(settings)?,
                None => {
                    current.insert(source.clone(), Database::new(settings)?);
                    changed = true;
                }
            }
        }
        let gone: Vec<Arc<str>> = (current.keys())
            .filter(|source| !readers.iter().any(|(kept, _)| kept == *source))
            .cloned()
            .collect();
        for source in gone {
            if let Some(reader) = current.remove(&source) {
                let pool = reader.pool();
                tokio::spawn(async move { pool.pool.close().await });
                changed = true;
            }
        }
        Ok(changed)
    }

    /// The servers of the sources whose jobs read their own (`read_url`), by source name: to check, read the schema
    /// of, or close beside this one.
    pub(crate) fn source_readers(&self) -> Vec<(Arc<str>, Database)> {
        let readers = self.readers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut readers: Vec<(Arc<str>, Database)> = (readers.iter())
            .map(|(source, db)| (source.clone(), db.clone()))
            .collect();
        readers.sort_by(|a, b| a.0.cmp(&b.0));
        readers
    }

    /// After an access denied, reads `[mysql]` again once with `reread` and, if it changed (a rotated password in the
    /// credentials directory), retries with it before the refusal counts.
    pub(crate) fn rereading(mut self, reread: Reread) -> Self {
        self.reread = Some(reread);
        self
    }

    fn pool(&self) -> Arc<Pool> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the pool with one for `settings` when they differ from the current ones: new queries use it at once,
    /// queries in flight finish on the old one, which then closes. Whether anything changed.
    pub fn replace(&self, settings: &MysqlSettings) -> Result<bool, DatabaseError> {
        if self.pool().settings == *settings {
            return Ok(false);
        }
        let new = Arc::new(Pool::new(settings)?);
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()),
            new,
        );
        tokio::spawn(async move { old.pool.close().await });
        Ok(true)
    }

    /// A pooled connection. An access denied (a password rotated under us) reads `[mysql]` again once and, when it
    /// changed, retries with the new settings.
    async fn connection(&self) -> Result<PoolConnection<MySql>, sqlx::Error> {
        let pool = self.pool();
        match pool.pool.acquire().await {
            Err(error) if is_access_denied(&error) && self.reread_changed() => {
                tracing::info!("MySQL denied access; [mysql] changed where it is read from: using the new settings.");
                self.pool().pool.acquire().await
            }
            acquired => acquired,
        }
    }

    /// Reads `[mysql]` again and applies it; whether it changed.
    fn reread_changed(&self) -> bool {
        let Some(settings) = self.reread.as_ref().and_then(|reread| reread()) else {
            return false;
        };
        self.replace(&settings).unwrap_or(false)
    }

    /// Checks that the server answers. When it does not, the error is the connection's own (refused, unknown
    /// host, access denied), not the pool's "timed out".
    pub(crate) async fn ping(&self) -> Result<(), DatabaseError> {
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(sqlx::Error::PoolTimedOut) => return Err(self.why_unreachable().await),
            Err(error) => return Err(unreachable(error)),
        };
        conn.ping().await.map_err(DatabaseError::from_query)
    }

    /// The pool retries connecting until its timeout and then reports only that it timed out; one direct attempt
    /// says why.
    async fn why_unreachable(&self) -> DatabaseError {
        let pool = self.pool();
        let timeout = pool.settings.connect_timeout;
        match tokio::time::timeout(timeout, sqlx::MySqlConnection::connect_with(&pool.options)).await {
            Ok(Err(error)) => unreachable(error),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                DatabaseError::Unreachable(sqlx::Error::PoolTimedOut)
            }
            Err(_) => unreachable(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}", crate::pure::words::duration(timeout)),
            ))),
        }
    }

    /// A connection for one warm query, with the server-side statement timeout set to `timeout`.
    pub(crate) async fn acquire(&self, timeout: Duration) -> Result<QueryConn, DatabaseError> {
        let mut conn = self.connection().await.map_err(unreachable)?;
        let flavor = *self
            .pool()
            .flavor
            .get_or_try_init(|| async {
                let version: String = sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(DatabaseError::from_query)?;
                Ok::<_, DatabaseError>(if version.contains("MariaDB") {
                    Flavor::MariaDb
                } else {
                    Flavor::MySql
                })
            })
            .await?;
        // Session variables rather than per-statement hints: the query text stays exactly the operator's.
        let set_timeout = match flavor {
            Flavor::MariaDb => format!("SET SESSION max_statement_time = {:.3}", timeout.as_secs_f64()),
            Flavor::MySql => format!("SET SESSION max_execution_time = {}", timeout.as_millis()),
        };
        conn.execute(AssertSqlSafe(set_timeout))
            .await
            .map_err(DatabaseError::from_query)?;
        Ok(QueryConn(conn))
    }

    /// The rows of a per-key `query` with `?` placeholders bound to `binds` in order (as strings; MySQL converts
    /// them to the column types). Values are bound, never spliced into the SQL.
    pub(crate) async fn fetch_bound(
        &self,
        query: &str,
        binds: &[&str],
        timeout: Duration,
    ) -> Result<Vec<MySqlRow>, DatabaseError> {
        let mut conn = self.acquire(timeout).await?;
        let mut statement = sqlx::query(AssertSqlSafe(query));
        for value in binds {
            statement = statement.bind(value.to_string());
        }
        match tokio::time::timeout(timeout, statement.fetch_all(&mut *conn.0)).await {
            Ok(rows) => rows.map_err(DatabaseError::from_query),
            Err(_) => Err(DatabaseError::Interrupted(sqlx::Error::PoolTimedOut)),
        }
    }

    /// The result columns of `query`, without running it (prepares the statement).
    pub async fn describe(&self, query: &str) -> Result<Vec<ColumnInfo>, DatabaseError> {
        let mut conn = self.connection().await.map_err(unreachable)?;
        let statement = conn
            .prepare(AssertSqlSafe(query).into_sql_str())
            .await
            .map_err(DatabaseError::from_query)?;
        Ok(sqlx::Statement::columns(&statement).iter().map(column_info).collect())
    }

    /// The server's estimate of how many rows `query` returns, for progress lines: EXPLAIN's row estimates multiplied
    /// over the tables it joins, capped by a final `LIMIT n`. `None` when the server gives no estimate.
    pub(crate) async fn estimate_rows(&self, query: &str) -> Option<u64> {
        let mut conn = self.connection().await.ok()?;
        let plan = sqlx::query(AssertSqlSafe(format!("EXPLAIN {query}")))
            .fetch_all(&mut *conn)
            .await
            .ok()?;
        if plan.is_empty() {
            return None;
        }
        let mut estimate: u64 = 1;
        for step in &plan {
            let rows = step
                .try_get::<Option<u64>, _>("rows")
                .ok()
                .flatten()
                .or_else(|| {
                    step.try_get::<Option<i64>, _>("rows")
                        .ok()
                        .flatten()
                        .map(|n| n.max(0) as u64)
                })
                .or_else(|| step.try_get::<Option<String>, _>("rows").ok().flatten()?.parse().ok())?;
            estimate = estimate.saturating_mul(rows);
        }
        Some(final_limit(query).map_or(estimate, |limit| estimate.min(limit)))
    }

    /// Closes every connection, waiting at most `CLOSE_TIMEOUT`: a connection abandoned mid-query (a timed-out
    /// run) may never be handed back, and shutdown must not wait for it.
    /// The sources' own servers (see [`Database::set_readers`]) are closed with it.
    pub(crate) async fn close(&self) {
        let pools: Vec<Arc<Pool>> = std::iter::once(self.pool())
            .chain(self.source_readers().iter().map(|(_, reader)| reader.pool()))
            .collect();
        let closing = futures_util::future::join_all(pools.iter().map(|pool| pool.pool.close()));
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::debug!("MySQL connections did not close in time; leaving them to the OS.");
        }
    }
}

/// Connection options from `[mysql]`: the URL, then the TLS settings on top.
pub(crate) fn connect_options(settings: &MysqlSettings) -> Result<MySqlConnectOptions, DatabaseError> {
    let mut options: MySqlConnectOptions = settings.url.expose().parse().map_err(DatabaseError::Refused)?;
    if let Some(mode) = settings.ssl_mode {
        options = options.ssl_mode(match mode {
            SslMode::Disabled => MySqlSslMode::Disabled,
            SslMode::Preferred => MySqlSslMode::Preferred,
            SslMode::Required => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyIdentity => MySqlSslMode::VerifyIdentity,
        });
    }
    if let Some(ca) = &settings.ssl_ca {
        options = options.ssl_ca(ca);
    }
    Ok(options)
}

/// The row count of a query's final `LIMIT n`, `LIMIT offset, n` or `LIMIT n OFFSET m`.
fn final_limit(query: &str) -> Option<u64> {
    let tokens: Vec<&str> = query.trim_end().trim_end_matches(';').split_whitespace().collect();
    let at = tokens
        .iter()
        .rposition(|token| token.eq_ignore_ascii_case("LIMIT"))
        .filter(|&at| tokens.len() - at <= 4)?;
    let count = tokens[at + 1..].concat();
    let count = count.split(|c: char| c.eq_ignore_ascii_case(&'o')).next()?;
    count.rsplit(',').next()?.parse().ok()
}

fn unreachable(error: sqlx::Error) -> DatabaseError {
    crate::telemetry::metrics::mysql_error();
    match error {
        // Wrong password, unknown database: not going to fix itself.
        sqlx::Error::Database(_) => DatabaseError::Refused(error),
        other => DatabaseError::Unreachable(other),
    }
}

/// A pooled connection prepared for one warm query.
pub(crate) struct QueryConn(PoolConnection<MySql>);

impl QueryConn {
    /// Streams the rows of `query` with `?` parameters, each bound as text (binary protocol, never buffered whole).
    pub(crate) fn rows_bound<'c>(
        &'c mut self,
        query: &'c str,
        params: &'c [String],
    ) -> BoxStream<'c, Result<MySqlRow, DatabaseError>> {
        let mut statement = sqlx::query(AssertSqlSafe(query));
        for param in params {
            statement = statement.bind(param.as_str());
        }
        statement.fetch(&mut *self.0).map_err(DatabaseError::from_query).boxed()
    }
}

/// The columns of a row's result.
pub fn columns(row: &MySqlRow) -> Vec<ColumnInfo> {
    row.columns().iter().map(column_info).collect()
}

fn column_info(column: &sqlx::mysql::MySqlColumn) -> ColumnInfo {
    let type_info = column.type_info();
    ColumnInfo {
        name: column.name().to_string(),
        type_name: type_info.name().to_string(),
        is_text: <str as sqlx::Type<MySql>>::compatible(type_info),
        source: column
            .origin()
            .table_column()
            .map(|origin| (origin.table.to_string(), origin.name.to_string())),
    }
}

/// The raw binary-protocol bytes of each value in `row` (`None` for NULL), appended to `out`.
pub(crate) fn raw_values<'r>(row: &'r MySqlRow, out: &mut Vec<Option<&'r [u8]>>) -> Result<(), DatabaseError> {
    for index in 0..row.len() {
        let value = row.try_get_raw(index).map_err(DatabaseError::Interrupted)?;
        if value.is_null() {
            out.push(None);
        } else {
            let bytes = <&[u8] as sqlx::Decode<MySql>>::decode(value)
                .map_err(|e| DatabaseError::Interrupted(sqlx::Error::Decode(e)))?;
            out.push(Some(bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_final_limit_caps_the_estimate_in_each_of_its_spellings() {
        use super::final_limit;
        assert_eq!(
            final_limit("SELECT id FROM p ORDER BY sales DESC\nLIMIT 100\n"),
            Some(100)
        );
        assert_eq!(final_limit("SELECT id FROM p limit 20, 10;"), Some(10));
        assert_eq!(final_limit("SELECT id FROM p LIMIT 10 OFFSET 5"), Some(10));
        assert_eq!(final_limit("SELECT id FROM p"), None);
        assert_eq!(
            final_limit("SELECT id FROM (SELECT id FROM p LIMIT 5) AS t WHERE id > 1 ORDER BY id"),
            None
        );
    }
}
