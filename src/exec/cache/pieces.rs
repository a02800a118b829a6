//! A partitioned warm run's board in Redis: start a run, claim, renew, give back and finish its pieces (the scripts
//! are `scripts::pieces`), and read the board. One hash per job, so one slot on a cluster.

use std::collections::HashMap;
use std::time::Duration;

use super::{Cache, CacheError, command_failed};
use crate::pure::model::{Board, PieceFigures};

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// This piece, over `low..=high` of the job's column, is ours until the claim runs out.
    Piece { piece: u32, low: i64, high: i64 },
    /// Every open piece is held by a live claim.
    AllHeld,
    /// The run is done (every piece done or failed).
    Finished,
    /// Another run replaced it, or there is none.
    Gone,
}

impl Cache {
    /// Starts a run of `count` pieces over `ranges` unless one is running; the id of the run that is.
    pub(crate) async fn start_pieces(
        &self,
        board: &str,
        run: &str,
        ranges: &[(i64, i64)],
    ) -> Result<String, CacheError> {
        let mut invocation = self.scripts.piece_start.key(board);
        invocation.arg(run).arg(ranges.len());
        for (low, high) in ranges {
            invocation.arg(format!("{low}:{high}"));
        }
        invocation.invoke_async(&mut self.conn()).await.map_err(command_failed)
    }

    /// Claims an open piece of `run` for `instance` for `ttl`; a piece claimed `attempts` times already fails instead.
    pub(crate) async fn claim_piece(
        &self,
        board: &str,
        run: &str,
        instance: &str,
        ttl: Duration,
        attempts: u32,
    ) -> Result<Claimed, CacheError> {
        let reply: (i64, String) = self
            .scripts
            .piece_claim
            .key(board)
            .arg(run)
            .arg(instance)
            .arg(ttl.as_millis() as u64)
            .arg(attempts)
            .invoke_async(&mut self.conn())
            .await
            .map_err(command_failed)?;
        let range = reply.1.split_once(':');
        Ok(match (reply.0, range) {
            (-2, _) => Claimed::Finished,
            (-3, _) => Claimed::AllHeld,
            (piece, Some((low, high))) if piece >= 0 => match (low.parse(), high.parse()) {
                (Ok(low), Ok(high)) => Claimed::Piece {
                    piece: piece as u32,
                    low,
                    high,
                },
                _ => Claimed::Gone,
            },
            _ => Claimed::Gone,
        })
    }

    /// Extends this instance's claim on `piece`; whether it still held it.
    pub(crate) async fn renew_piece(
        &self,
        board: &str,
        run: &str,
        piece: u32,
        instance: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let renewed: i64 = self
            .scripts
            .piece_renew
            .key(board)
            .arg(run)
            .arg(piece)
            .arg(instance)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(command_failed)?;
        Ok(renewed == 1)
    }

    /// Gives this instance's claim on `piece` back.
    pub(crate) async fn release_piece(
        &self,
        board: &str,
        run: &str,
        piece: u32,
        instance: &str,
    ) -> Result<(), CacheError> {
        self.scripts
            .piece_release
            .key(board)
            .arg(run)
            .arg(piece)
            .arg(instance)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(command_failed)
    }

    /// Records `piece` done by `instance`; whether it counted (not when its claim had gone to another).
    pub(crate) async fn finish_piece(
        &self,
        board: &str,
        run: &str,
        piece: u32,
        instance: &str,
        figures: &PieceFigures,
    ) -> Result<bool, CacheError> {
        let done: i64 = self
            .scripts
            .piece_done
            .key(board)
            .arg(run)
            .arg(piece)
            .arg(instance)
            .arg(figures.encode())
            .invoke_async(&mut self.conn())
            .await
            .map_err(command_failed)?;
        Ok(done == 1)
    }

    /// The board of the job's latest run, if there is one.
    pub(crate) async fn read_board(&self, board: &str) -> Result<Option<Board>, CacheError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(board)
            .query_async(&mut self.conn())
            .await
            .map_err(command_failed)?;
        Ok(Board::from_fields(&fields))
    }
}
