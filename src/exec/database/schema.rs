//! What the server says of its tables, from information_schema: their columns, the tables a rule's pattern names,
//! and what `derive::schema` needs (cascading foreign keys, unique keys, views).

use super::{Database, DatabaseError};
use crate::pure::derive::schema::{Action, ForeignKey, Schema};

impl Database {
    /// [`Database::schema`] of every server the jobs read, merged: this one's for `databases(None)`, and each binlog
    /// source's own server (see [`Database::set_readers`]) for `databases(Some(source))`.
    pub(crate) async fn schema_everywhere(
        &self,
        databases: &dyn Fn(Option<&str>) -> Vec<String>,
    ) -> Result<Schema, DatabaseError> {
        let mut schema = self.schema(&databases(None)).await?;
        for (source, reader) in self.source_readers() {
            schema.merge(reader.schema(&databases(Some(&source))).await?);
        }
        Ok(schema)
    }

    /// The columns of `database.table`, in order; `None` when there is no such table.
    pub(crate) async fn table_columns(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<Vec<String>>, DatabaseError> {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(database)
        .bind(table)
        .fetch_all(&self.pool().pool)
        .await
        .map_err(DatabaseError::from_query)?;
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// What `derive::schema` needs, read from information_schema: the foreign keys this user can see whose
    /// `ON DELETE` or `ON UPDATE` changes child rows, and the unique keys, views and columns of `databases`.
    pub async fn schema(&self, databases: &[String]) -> Result<Schema, DatabaseError> {
        let mut schema = Schema {
            foreign_keys: self.foreign_keys().await?,
            read: true,
            ..Schema::default()
        };
        for database in databases {
            self.unique_keys(database, &mut schema.unique_keys).await?;
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(TABLE_NAME AS CHAR), CAST(VIEW_DEFINITION AS CHAR) FROM information_schema.VIEWS \
                 WHERE TABLE_SCHEMA = ?",
            )
            .bind(database)
            .fetch_all(&self.pool().pool)
            .await
            .map_err(DatabaseError::from_query)?;
            schema.views.extend(
                rows.into_iter()
                    .map(|(view, definition)| (database.clone(), view, definition)),
            );
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            )
            .bind(database)
            .fetch_all(&self.pool().pool)
            .await
            .map_err(DatabaseError::from_query)?;
            for (table, column) in rows {
                match schema.columns.last_mut() {
                    Some((db, name, list)) if db == database && *name == table => list.push(column),
                    _ => schema.columns.push((database.clone(), table, vec![column])),
                }
            }
        }
        Ok(schema)
    }

    /// Every foreign key with a cascading action (`ON DELETE`/`ON UPDATE` other than `RESTRICT` and `NO ACTION`).
    async fn foreign_keys(&self) -> Result<Vec<ForeignKey>, DatabaseError> {
        type Row = (String, String, String, String, String, String, String, String, String);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT CAST(k.CONSTRAINT_NAME AS CHAR), CAST(k.TABLE_SCHEMA AS CHAR), CAST(k.TABLE_NAME AS CHAR), \
             CAST(k.COLUMN_NAME AS CHAR), CAST(k.REFERENCED_TABLE_SCHEMA AS CHAR), \
             CAST(k.REFERENCED_TABLE_NAME AS CHAR), CAST(k.REFERENCED_COLUMN_NAME AS CHAR), \
             CAST(r.DELETE_RULE AS CHAR), CAST(r.UPDATE_RULE AS CHAR) \
             FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
             ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
             AND r.TABLE_NAME = k.TABLE_NAME \
             WHERE k.REFERENCED_TABLE_NAME IS NOT NULL \
             AND (r.DELETE_RULE NOT IN ('RESTRICT', 'NO ACTION') OR r.UPDATE_RULE NOT IN ('RESTRICT', 'NO ACTION')) \
             ORDER BY k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        )
        .fetch_all(&self.pool().pool)
        .await
        .map_err(DatabaseError::from_query)?;
        let mut foreign_keys: Vec<ForeignKey> = Vec::new();
        for (name, database, table, column, parent_database, parent_table, parent_column, on_delete, on_update) in rows
        {
            match foreign_keys.last_mut() {
                Some(key) if key.name == name && key.database == database && key.table == table => {
                    key.columns.push(column);
                    key.parent_columns.push(parent_column);
                }
                _ => foreign_keys.push(ForeignKey {
                    name,
                    database,
                    table,
                    columns: vec![column],
                    parent_database,
                    parent_table,
                    parent_columns: vec![parent_column],
                    on_delete: Action::parse(&on_delete),
                    on_update: Action::parse(&on_update),
                }),
            }
        }
        Ok(foreign_keys)
    }

    /// Appends `database`'s unique keys (primary ones included) to `unique_keys`: (database, table, columns).
    async fn unique_keys(
        &self,
        database: &str,
        unique_keys: &mut Vec<(String, String, Vec<String>)>,
    ) -> Result<(), DatabaseError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT CAST(TABLE_NAME AS CHAR), CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND NON_UNIQUE = 0 \
             ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        )
        .bind(database)
        .fetch_all(&self.pool().pool)
        .await
        .map_err(DatabaseError::from_query)?;
        let mut last: Option<(String, String)> = None;
        for (table, index, column) in rows {
            let same = last.as_ref() == Some(&(table.clone(), index.clone()));
            match unique_keys.last_mut() {
                Some((_, _, columns)) if same => columns.push(column),
                _ => unique_keys.push((database.to_string(), table.clone(), vec![column])),
            }
            last = Some((table, index));
        }
        Ok(())
    }

    /// The tables whose `database.table` a rule's table pattern names (only `*` special), sorted.
    pub(crate) async fn tables_matching(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Vec<(String, String)>, DatabaseError> {
        let like = |pattern: &str| {
            pattern
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('*', "%")
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA LIKE ? AND TABLE_NAME LIKE ? ORDER BY 1, 2",
        )
        .bind(like(database))
        .bind(like(table))
        .fetch_all(&self.pool().pool)
        .await
        .map_err(DatabaseError::from_query)?;
        Ok(rows
            .into_iter()
            .filter(|(db, name)| crate::pure::glob::table_matches(database, table, db, name))
            .collect())
    }
}
