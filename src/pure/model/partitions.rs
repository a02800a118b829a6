//! A warm job split into pieces (`partitions = K`): the ranges of its numeric column, the query each piece reads,
//! and the board of a run's pieces as instances claim and finish them (kept in Redis by `exec::warm::pieces`).

use std::collections::HashMap;

/// `partitions = K`, `partition_by = "column"`: the job's rows split into `count` ranges of `column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    pub count: u32,
    /// A numeric column of the query's result (by default the key template's one placeholder).
    pub column: String,
}

/// The most pieces a job may be split into.
pub const MAX_PARTITIONS: u32 = 256;

impl Partitions {
    /// `count` ranges of equal width covering `low..=high` (fewer when there are fewer values than pieces), each
    /// inclusive at both ends.
    pub(crate) fn ranges(&self, low: i64, high: i64) -> Vec<(i64, i64)> {
        if high < low {
            return Vec::new();
        }
        let span = i128::from(high) - i128::from(low) + 1;
        let count = i128::from(self.count.max(1)).min(span);
        let width = (span + count - 1) / count;
        (0..count)
            .map(|i| {
                let start = i128::from(low) + i * width;
                let end = (start + width - 1).min(i128::from(high));
                (start as i64, end as i64)
            })
            .filter(|(start, end)| start <= end)
            .collect()
    }

    /// The query that reads one piece: the job's query with its rows restricted to `low..=high` of the column.
    pub(crate) fn piece_query(&self, query: &str, low: i64, high: i64) -> String {
        let query = query.trim().trim_end_matches(';');
        let column = format!("cw_piece.`{}`", self.column.replace('`', "``"));
        format!("SELECT * FROM ({query}) AS cw_piece WHERE {column} BETWEEN {low} AND {high}")
    }

    /// The query that finds the column's range over the job's rows.
    pub(crate) fn range_query(&self, query: &str) -> String {
        let query = query.trim().trim_end_matches(';');
        let column = format!("cw_range.`{}`", self.column.replace('`', "``"));
        format!("SELECT MIN({column}), MAX({column}) FROM ({query}) AS cw_range")
    }
}

/// Where one piece of a run stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceState {
    /// Not claimed yet, or its claim ran out (its instance died): the next instance that looks takes it.
    Waiting,
    Running,
    Done,
    /// Given up after too many attempts.
    Failed,
}

/// One piece of a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Piece {
    pub piece: u32,
    pub low: i64,
    pub high: i64,
    pub state: PieceState,
    /// The instance that holds it (running) or finished it (done).
    pub instance: Option<String>,
    /// Times it was claimed: more than 1 when an instance died (or failed) during it.
    pub attempts: u64,
    /// Times it was recorded done: 1 once done, whoever ran it.
    pub completions: u64,
    pub rows: u64,
    pub keys: u64,
    pub bytes: u64,
    pub millis: u64,
}

/// A run of a partitioned job, as its hash in Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Board {
    pub run: String,
    /// `running` or `done`.
    pub state: String,
    pub pieces: Vec<Piece>,
}

/// What a piece's instance records when it finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PieceFigures {
    pub rows: u64,
    pub keys: u64,
    pub bytes: u64,
    pub millis: u64,
}

impl PieceFigures {
    /// As stored in the run's hash: `rows keys bytes millis`.
    pub fn encode(&self) -> String {
        format!("{} {} {} {}", self.rows, self.keys, self.bytes, self.millis)
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut numbers = text.split(' ').map(str::parse::<u64>);
        let figures = Self {
            rows: numbers.next()?.ok()?,
            keys: numbers.next()?.ok()?,
            bytes: numbers.next()?.ok()?,
            millis: numbers.next()?.ok()?,
        };
        numbers.next().is_none().then_some(figures)
    }
}

impl Board {
    /// The board a run's hash describes (`HGETALL`), `None` when there is no run (or it is not one of ours).
    pub(crate) fn from_fields(fields: &HashMap<String, String>) -> Option<Board> {
        let count: u32 = fields.get("pieces")?.parse().ok()?;
        let number = |name: String| fields.get(&name).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let mut pieces = Vec::with_capacity(count as usize);
        for piece in 0..count {
            let (low, high) = fields.get(&format!("range:{piece}"))?.split_once(':')?;
            let done = fields.get(&format!("done:{piece}"));
            let figures = done.and_then(|text| {
                let (_, figures) = text.split_once('|')?;
                PieceFigures::decode(figures)
            });
            let claimed = fields.get(&format!("claim:{piece}"));
            let state = if done.is_some() {
                PieceState::Done
            } else if fields.contains_key(&format!("failed:{piece}")) {
                PieceState::Failed
            } else if claimed.is_some() {
                PieceState::Running
            } else {
                PieceState::Waiting
            };
            let instance = done
                .and_then(|text| text.split_once('|').map(|(who, _)| who.to_string()))
                .or_else(|| claimed.cloned());
            let figures = figures.unwrap_or_default();
            pieces.push(Piece {
                piece,
                low: low.parse().ok()?,
                high: high.parse().ok()?,
                state,
                instance,
                attempts: number(format!("attempts:{piece}")),
                completions: number(format!("completions:{piece}")),
                rows: figures.rows,
                keys: figures.keys,
                bytes: figures.bytes,
                millis: figures.millis,
            });
        }
        Some(Board {
            run: fields.get("run")?.clone(),
            state: fields.get("state")?.clone(),
            pieces,
        })
    }

    /// The run's figures (the done pieces' together; the longest piece's time) and how many pieces failed.
    pub(crate) fn totals(&self) -> (PieceFigures, usize) {
        let mut total = PieceFigures::default();
        for piece in self.pieces.iter().filter(|p| p.state == PieceState::Done) {
            total.rows += piece.rows;
            total.keys += piece.keys;
            total.bytes += piece.bytes;
            total.millis = total.millis.max(piece.millis);
        }
        let failed = self.pieces.iter().filter(|p| p.state == PieceState::Failed).count();
        (total, failed)
    }

    /// Whether every piece is done or failed.
    pub fn finished(&self) -> bool {
        self.pieces
            .iter()
            .all(|p| matches!(p.state, PieceState::Done | PieceState::Failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(count: u32) -> Partitions {
        Partitions {
            count,
            column: "id".into(),
        }
    }

    #[test]
    fn ranges_cover_every_value_once() {
        for (count, low, high) in [
            (4, 1, 1000),
            (3, 1, 10),
            (5, -7, 3),
            (7, 0, 2),
            (1, 5, 5),
            (2, i64::MIN, i64::MAX),
        ] {
            let ranges = partitions(count).ranges(low, high);
            assert!(ranges.len() <= count as usize, "{count} {low} {high}: {ranges:?}");
            assert_eq!(ranges[0].0, low);
            assert_eq!(ranges.last().unwrap().1, high);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1.checked_add(1), Some(pair[1].0), "{ranges:?}");
            }
        }
        assert_eq!(
            partitions(4).ranges(1, 1000),
            [(1, 250), (251, 500), (501, 750), (751, 1000)]
        );
        assert_eq!(partitions(5).ranges(0, 2), [(0, 0), (1, 1), (2, 2)]);
        assert!(partitions(3).ranges(5, 4).is_empty());
    }

    #[test]
    fn a_piece_reads_its_range_of_the_query() {
        let p = Partitions {
            count: 2,
            column: "product`id".into(),
        };
        assert_eq!(
            p.piece_query("SELECT id AS `product``id` FROM t;", -3, 9),
            "SELECT * FROM (SELECT id AS `product``id` FROM t) AS cw_piece WHERE cw_piece.`product``id` BETWEEN -3 AND 9"
        );
        assert_eq!(
            p.range_query(" SELECT x FROM t "),
            "SELECT MIN(cw_range.`product``id`), MAX(cw_range.`product``id`) FROM (SELECT x FROM t) AS cw_range"
        );
    }

    #[test]
    fn the_board_reads_the_runs_hash() {
        let fields: HashMap<String, String> = [
            ("run", "r1"),
            ("state", "running"),
            ("pieces", "3"),
            ("range:0", "1:10"),
            ("range:1", "11:20"),
            ("range:2", "21:25"),
            ("done:0", "a|10 10 500 42"),
            ("attempts:0", "2"),
            ("completions:0", "1"),
            ("claim:1", "b"),
            ("attempts:1", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let board = Board::from_fields(&fields).unwrap();
        assert_eq!(board.run, "r1");
        let states: Vec<_> = board.pieces.iter().map(|p| p.state.clone()).collect();
        assert_eq!(states, [PieceState::Done, PieceState::Running, PieceState::Waiting]);
        assert_eq!(board.pieces[0].instance.as_deref(), Some("a"));
        assert_eq!(
            (board.pieces[0].keys, board.pieces[0].millis, board.pieces[0].attempts),
            (10, 42, 2)
        );
        assert_eq!(board.pieces[1].instance.as_deref(), Some("b"));
        assert_eq!((board.pieces[2].low, board.pieces[2].high), (21, 25));
        assert_eq!(
            board.totals(),
            (
                PieceFigures {
                    rows: 10,
                    keys: 10,
                    bytes: 500,
                    millis: 42
                },
                0
            )
        );
        assert!(!board.finished());
        assert!(Board::from_fields(&HashMap::new()).is_none());
    }

    #[test]
    fn figures_round_trip() {
        let figures = PieceFigures {
            rows: 1,
            keys: 2,
            bytes: 3,
            millis: 4,
        };
        assert_eq!(PieceFigures::decode(&figures.encode()), Some(figures));
        assert_eq!(PieceFigures::decode("1 2 3"), None);
        assert_eq!(PieceFigures::decode("1 2 3 4 5"), None);
    }
}
