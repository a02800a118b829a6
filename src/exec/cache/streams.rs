//! The channel's and the dead letters' commands: publishing an invalidation, adding to a stream (capped, for the dead
//! letters) and reading a stream's range back.

use super::{Cache, CacheError, STREAM_FIELD, command_failed};

impl Cache {
    /// `PUBLISH channel message`; returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, CacheError> {
        let mut conn = self.conn();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// `XADD stream * message <message>`; returns the entry id.
    pub(crate) async fn stream_add(&self, stream: &str, message: &str) -> Result<String, CacheError> {
        let mut conn = self.conn();
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(STREAM_FIELD)
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// `XADD stream MAXLEN ~ length * field value …` for each entry, pipelined: a capped stream (the dead letters).
    pub(crate) async fn stream_add_capped(
        &self,
        stream: &str,
        length: usize,
        fields: &[&str],
        entries: &[[&[u8]; 5]],
    ) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        for entry in entries {
            let command = pipe.cmd("XADD").arg(stream).arg("MAXLEN").arg("~").arg(length).arg("*");
            for (field, value) in fields.iter().zip(entry) {
                command.arg(*field).arg(*value);
            }
            command.ignore();
        }
        let mut conn = self.conn();
        pipe.query_async::<()>(&mut conn).await.map_err(command_failed)
    }

    /// `XRANGE stream start + COUNT count`: entries as (id, [(field, value)]).
    pub(crate) async fn stream_range(
        &self,
        stream: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<(String, Vec<(String, Vec<u8>)>)>, CacheError> {
        let mut conn = self.conn();
        let reply: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(reply
            .into_iter()
            .map(|(id, flat)| {
                let fields = flat
                    .chunks(2)
                    .filter_map(|pair| match pair {
                        [field, value] => Some((String::from_utf8_lossy(field).into_owned(), value.clone())),
                        _ => None,
                    })
                    .collect();
                (id, fields)
            })
            .collect())
    }
}
