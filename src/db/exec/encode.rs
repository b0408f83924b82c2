//! The remote encoder: a batch of operations into one [`RemoteTx`], sent in
//! one Hrana request, and the plan for reading the server's answer. Pure:
//! it talks to no server, and its tests need none.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use hyper::body::Bytes;
use libsql::Value;

use crate::db::columns::Table;
use crate::db::exec::json_form::{has_json_form, push_json_row, text_has_json_form};
use crate::db::exec::remap::StepRemap;
use crate::db::exec::{segments, Segment};
use crate::db::hrana::{self, hrana_integer, Arg, BatchResult, Stmt};
use crate::db::lease::{lease_statements, remote_block, READS_BLOCK};
use crate::db::op::{text, Op, UPDATE_COUNTS_SQL, UPDATE_TIMESTEP_SQL};
use crate::db::tx::{Marker, RemoteOutcome, RemoteTx, TxShape};
use crate::error::{DbError, ErrorClass, BUG};

/// Most bound parameters in one statement of a remote batch: SQLite's
/// default limit since 3.32. A server with a lower one refuses the
/// statement, and the batch is sent again one row per statement.
pub(crate) const REMOTE_MAX_PARAMS: usize = 32_766;

/// How a remote batch ended (see [`EncodedTx::read_answer`]).
#[derive(Debug)]
pub(crate) enum RemoteBatch {
    /// Committed, with the id blocks of the leases that rode along, in
    /// their order.
    Committed(Vec<Range<i64>>),
    /// Rolled back: these operations (indexes into the batch) failed, each
    /// with its error.
    Failed(Vec<(usize, DbError)>),
    /// Rolled back: a multi-row statement failed; send one row per
    /// statement to find the operation at fault.
    MultiRowFailed(DbError),
    /// Rolled back, as it was sent behind a batch that had not committed
    /// when it ran (see [`Behind`]): send it again once that one's outcome
    /// is known.
    RanFirst,
}

/// The batches in flight that a batch is sent behind, before their outcome
/// is known: see [`RemoteEncoder::encode`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Behind<'a> {
    /// The row of the last of them that is there if and only if it
    /// committed (see [`crate::db::tx::marker`]).
    pub(crate) marker: Marker,
    /// Their operations, oldest first.
    pub(crate) ops: &'a [&'a Op],
}

/// A remote batch encoded and ready to send, with the plan for reading its
/// answer.
#[derive(Debug)]
pub(crate) struct EncodedTx {
    /// The request body. Shared, not copied, when it is sent (from another
    /// task, and again after a fault).
    pub(crate) body: Bytes,
    shape: TxShape,
    carries: Vec<Carries>,
    /// Where the real ids of the batch's steps made elsewhere are read
    /// (see [`STEP_IDS_SQL`]), if it makes steps.
    id_read: Option<usize>,
    /// Where the real id of each step named with a NUL is read, and the id
    /// this writer gave it (see [`FIX_UP_ONE_SQL`]).
    id_reads: Vec<(usize, i64)>,
    /// Where each riding lease's block is read.
    lease_reads: Vec<(usize, Table, i64)>,
    /// [`StepRemap::learnt`] when it was encoded.
    remaps: u64,
}

/// Which operations a statement of a remote batch carries.
#[derive(Debug)]
enum Carries {
    /// One operation, by index.
    One(usize),
    /// A multi-row insert of several.
    Many,
    /// The fix-up of records filed under a step created elsewhere, or the
    /// read of a step's real id.
    FixUp,
    /// A statement of an id lease riding along.
    Lease,
}

/// The steps whose records a fix-up looks at: `?1` is a JSON array of
/// `[session_id, step_id, the id this writer gave the step]`, and `fixes`
/// holds each such step whose row has another id (it was made elsewhere,
/// the insert met its `(session_id, step_id)`), with its real id.
macro_rules! fixes {
    () => {
        "(SELECT j.value ->> 0 AS sid, j.value ->> 2 AS given, s.id AS real \
         FROM json_each(?1) AS j JOIN session_timesteps AS s \
         ON s.session_id = j.value ->> 0 AND s.step_id = j.value ->> 1 \
         WHERE s.id <> j.value ->> 2)"
    };
}

/// Moves the events or messages filed under a step id this writer handed
/// out to the real row of that step, for every step of `?1` made elsewhere
/// (see [`fixes!`]): one statement per table for the whole batch.
///
/// Every batch runs these, so each must find its rows through an index:
/// `messages` has none on `timestep_id`, and without `session_id = m.sid`
/// a step would scan the whole table and a server's time per batch would
/// grow with the database (`rollout_rate_as_the_database_grows` in
/// `tests/remote_latency.rs`). The rows filed under a step's id are its
/// session's, so the condition only narrows the search.
///
/// One statement per table, rather than two per step, is what makes a
/// batch of tracer rollouts cheap for the server: each statement of a
/// request costs sqld a parse and a result, and with a fix-up pair and an
/// id read per step a rollout's batch was mostly such statements.
const FIX_UP_SQL: [&str; 2] = [
    concat!(
        "UPDATE events SET timestep_id = m.real FROM ",
        fixes!(),
        " AS m WHERE events.session_id = m.sid AND events.timestep_id = m.given"
    ),
    concat!(
        "UPDATE messages SET timestep_id = m.real FROM ",
        fixes!(),
        " AS m WHERE messages.session_id = m.sid AND messages.timestep_id = m.given"
    ),
];

/// [`FIX_UP_SQL`] for one step, `?1` its session, `?2` its step id and
/// `?3` the id this writer gave it: for a step whose names hold a NUL,
/// which JSON text cannot carry to SQLite (see `json_form::has_json_form`).
const FIX_UP_ONE_SQL: [&str; 2] = [
    "UPDATE events SET timestep_id = (SELECT id FROM session_timesteps \
     WHERE session_id = ?1 AND step_id = ?2) WHERE session_id = ?1 AND timestep_id = ?3 \
     AND ?3 <> (SELECT id FROM session_timesteps WHERE session_id = ?1 AND step_id = ?2)",
    "UPDATE messages SET timestep_id = (SELECT id FROM session_timesteps \
     WHERE session_id = ?1 AND step_id = ?2) WHERE session_id = ?1 AND timestep_id = ?3 \
     AND ?3 <> (SELECT id FROM session_timesteps WHERE session_id = ?1 AND step_id = ?2)",
];

/// Reads, for every step of `?1` (see [`fixes!`]) whose row has another id
/// than the one this writer gave it, both ids: `(given, real)`.
const STEP_IDS_SQL: &str = concat!("SELECT m.given, m.real FROM ", fixes!(), " AS m");

/// Whether a step's names can go in the JSON argument of [`FIX_UP_SQL`].
fn names_have_json_form(sid: &str, step: &str) -> bool {
    text_has_json_form(sid) && text_has_json_form(step)
}

/// `steps`, `(id given, session_id, step_id)`, as the JSON argument of
/// [`FIX_UP_SQL`] and [`STEP_IDS_SQL`].
fn steps_json<'a>(steps: impl Iterator<Item = (i64, &'a str, &'a str)>) -> Result<String, DbError> {
    let steps: Vec<(&str, &str, i64)> = steps.map(|(id, sid, step)| (sid, step, id)).collect();
    serde_json::to_string(&steps)
        .map_err(|e| DbError::new(ErrorClass::Fatal, format!("cannot encode the steps: {e}")))
}

/// Reads the id of the row of step `step` of session `sid`.
pub(crate) fn step_id_read(sid: &str, step: &str) -> Stmt<'static> {
    Stmt::query(
        "SELECT id FROM session_timesteps WHERE session_id = ? AND step_id = ?",
        vec![Arg::owned(text(sid)), Arg::owned(text(step))],
    )
}

/// How many of `left` rows of `table` the next multi-row statement takes:
/// the largest power of two that fits, and at most what one statement may
/// bind. Statements thus come in a fixed set of sizes, so the cache of
/// their text is bounded (see [`RemoteEncoder::insert_text`]): a run of 13
/// rows goes as 8, 4 and 1.
fn chunk_rows(table: Table, left: usize) -> usize {
    let most = (REMOTE_MAX_PARAMS / table.columns().len()).clamp(1, left.max(1));
    1 << (usize::BITS - 1 - most.leading_zeros())
}

/// Turns batches of operations into requests.
#[derive(Debug, Default)]
pub(crate) struct RemoteEncoder {
    /// `INSERT` text by (table, rows), shared by the requests that use it.
    insert_text: HashMap<(Table, usize), Arc<str>>,
    /// `INSERT` text of rows in one JSON argument, by table.
    json_text: HashMap<Table, Arc<str>>,
}

impl RemoteEncoder {
    /// The `INSERT` text for `rows` rows of `table`, cached. Only the sizes
    /// [`chunk_rows`] gives are asked for: powers of two up to what one
    /// statement may bind (32,766 parameters), so the cache holds at most
    /// 14 texts per table (`⌊log2(32766 / columns)⌋ + 1`), under 0.9 MB for
    /// all tables together in the worst case, however long the writer runs.
    fn insert_text(&mut self, table: Table, rows: usize) -> Arc<str> {
        self.insert_text
            .entry((table, rows))
            .or_insert_with(|| table.insert_sql(rows, false).into())
            .clone()
    }

    /// Encodes a batch of operations (ids assigned) as one request that
    /// applies it on a remote server in one transaction: see [`RemoteTx`].
    /// With `multi`, runs of inserts go in as multi-row statements, by table.
    /// Leases ride along: `leases` are `(table, size)`. Records are filed
    /// under the steps' real rows as far as `remap` knows them now: once it
    /// learns more (see [`EncodedTx::is_current`]), encode the batch again.
    ///
    /// With `behind`, the batch may be sent while those are in flight: it
    /// commits only if the last of them committed first (its marker row is
    /// there), and it moves its own records filed under their steps too, as
    /// they may teach that a step was made elsewhere only when they commit.
    ///
    /// # Errors
    /// `Fatal` if the batch cannot be encoded.
    pub(crate) fn encode(
        &mut self,
        remap: &StepRemap,
        ops: &[&Op],
        multi: bool,
        leases: &[(Table, i64)],
        behind: Option<Behind<'_>>,
    ) -> Result<EncodedTx, DbError> {
        let mut stmts = Vec::new();
        let mut carries = Vec::new();
        let steps_made: Vec<(i64, &str, &str)> =
            ops.iter().filter_map(|op| op.timestep_key()).collect();
        let deferrable = multi.then(|| deferrable_step_updates(ops));
        let runs = |k: usize| match ops[k] {
            Op::Insert { table, .. } if multi => Some(*table),
            Op::UpdateTimestep { .. } if deferrable.as_ref().is_some_and(|d| d[k]) => {
                Some(Table::Timesteps)
            }
            _ => None,
        };
        for segment in segments(ops.len(), 2, runs) {
            let i = match segment {
                Segment::One(i) => i,
                Segment::Run(tables) => {
                    for (table, rows) in tables {
                        let (updates, inserts): (Vec<usize>, Vec<usize>) = rows
                            .into_iter()
                            .partition(|&j| matches!(ops[j], Op::UpdateTimestep { .. }));
                        if !inserts.is_empty() {
                            self.push_rows(remap, table, ops, &inserts, &mut stmts);
                        }
                        if updates.is_empty() {
                            continue;
                        }
                        // Each deferred update names its step and has a JSON
                        // form (`deferrable_step_updates`).
                        let stmt = step_updates(ops, &updates)
                            .ok_or_else(|| DbError::new(ErrorClass::Fatal, BUG))?;
                        stmts.push(stmt);
                    }
                    carries.resize_with(stmts.len(), || Carries::Many);
                    continue;
                }
            };
            let op = ops[i];
            if let Op::Insert { table, .. } = op {
                // A row alone goes in the JSON form too: its floats then
                // reach the server exactly (see `json_form::push_json_value`).
                if let Some(stmt) = self.json_stmt(remap, *table, ops, &[i]) {
                    stmts.push(stmt);
                    carries.push(Carries::One(i));
                    continue;
                }
            }
            let (sql, mut args): (Arc<str>, Vec<Arg<'_>>) = match op {
                Op::Insert { table, values } => (
                    self.insert_text(*table, 1),
                    values.iter().map(Arg::of).collect(),
                ),
                Op::UpdateTimestep { values } => (
                    UPDATE_TIMESTEP_SQL.into(),
                    values.iter().map(Arg::of).collect(),
                ),
                Op::UpdateSessionCounts { session_id } => {
                    (UPDATE_COUNTS_SQL.into(), vec![Arg::owned(text(session_id))])
                }
            };
            if let Op::Insert { table, .. } = op {
                remap.args(*table, &mut args);
            }
            stmts.push(Stmt {
                sql,
                args,
                want_rows: false,
            });
            carries.push(Carries::One(i));
        }
        // Records of this batch filed under a step that turns out to exist
        // already go under its real row, inside the same transaction.
        let steps_behind = behind
            .iter()
            .flat_map(|b| b.ops.iter().filter_map(|op| op.timestep_key()));
        let (fixed, named_with_nul): (Vec<_>, Vec<_>) = steps_made
            .iter()
            .copied()
            .chain(steps_behind)
            .partition(|&(_, sid, step)| names_have_json_form(sid, step));
        if !fixed.is_empty() {
            let steps = steps_json(fixed.into_iter())?;
            for sql in FIX_UP_SQL {
                stmts.push(Stmt {
                    sql: sql.into(),
                    args: vec![Arg::owned(Value::Text(steps.clone()))],
                    want_rows: false,
                });
                carries.push(Carries::FixUp);
            }
        }
        for &(id, sid, step) in &named_with_nul {
            for sql in FIX_UP_ONE_SQL {
                stmts.push(Stmt {
                    sql: sql.into(),
                    args: vec![
                        Arg::owned(text(sid)),
                        Arg::owned(text(step)),
                        Arg::owned(Value::Integer(id)),
                    ],
                    want_rows: false,
                });
                carries.push(Carries::FixUp);
            }
        }
        // And the real ids of the steps made elsewhere, read in the same
        // transaction, so that the records of later batches go under them
        // too: learnt with the commit, never lost to a second request that
        // fails.
        let (made, made_with_nul): (Vec<_>, Vec<_>) = steps_made
            .into_iter()
            .partition(|&(_, sid, step)| names_have_json_form(sid, step));
        let id_read = if made.is_empty() {
            None
        } else {
            let steps = steps_json(made.into_iter())?;
            stmts.push(Stmt::query(
                STEP_IDS_SQL,
                vec![Arg::owned(Value::Text(steps))],
            ));
            carries.push(Carries::FixUp);
            Some(stmts.len() - 1)
        };
        let mut id_reads = Vec::with_capacity(made_with_nul.len());
        for (id, sid, step) in made_with_nul {
            id_reads.push((stmts.len(), id));
            stmts.push(step_id_read(sid, step));
            carries.push(Carries::FixUp);
        }
        // Id leases ride in the same transaction: no round trip of their own.
        let mut lease_reads = Vec::with_capacity(leases.len());
        for &(table, n) in leases {
            lease_reads.push((stmts.len() + READS_BLOCK, table, n));
            stmts.extend(lease_statements(table, n));
            carries.resize_with(stmts.len(), || Carries::Lease);
        }
        let tx = match behind {
            Some(b) => RemoteTx::behind(b.marker, stmts),
            None => RemoteTx::new(stmts),
        };
        Ok(EncodedTx {
            body: hrana::encode(&tx.steps)?,
            shape: tx.shape(),
            carries,
            id_read,
            id_reads,
            lease_reads,
            remaps: remap.learnt(),
        })
    }

    /// The insert of `rows` (indexes into `ops`) of `table` in the JSON
    /// form, or `None` if a value has none.
    fn json_stmt<'a>(
        &mut self,
        remap: &StepRemap,
        table: Table,
        ops: &[&'a Op],
        rows: &[usize],
    ) -> Option<Stmt<'a>> {
        let text = json_rows(remap, table, ops, rows)?;
        let sql = self
            .json_text
            .entry(table)
            .or_insert_with(|| table.insert_json_sql().into())
            .clone();
        Some(Stmt {
            sql,
            args: vec![Arg::owned(Value::Text(text))],
            want_rows: false,
        })
    }

    /// The rows `rows` (indexes into `ops`) of `table` as multi-row inserts:
    /// one statement with the rows as one JSON argument if every value has
    /// a JSON form (see `json_form::push_json_value`), else statements with bound
    /// parameters, up to [`REMOTE_MAX_PARAMS`] each.
    ///
    /// The JSON form is what makes a remote batch cheap for the server. A
    /// bound parameter is an object of its own in the Hrana request
    /// (`{"type":"text","value":...}`), which sqld parses and allocates one
    /// by one, and a statement of 2,048 rows of `(?, ?, ...)` is tens of
    /// kilobytes of SQL that sqld parses twice: in `perf` of sqld those two
    /// were most of its time, and running the statements under 1%. As one
    /// JSON text 8,192 small events make a request of 1.5 MB instead of
    /// 5.6 MB, and the writer's rate in `tests/remote_latency.rs` rose from
    /// 58,520 to 74,009 events/s on loopback and from 45,726 to 65,815 at
    /// 100 ms (medians of three runs each).
    fn push_rows<'a>(
        &mut self,
        remap: &StepRemap,
        table: Table,
        ops: &[&'a Op],
        rows: &[usize],
        stmts: &mut Vec<Stmt<'a>>,
    ) {
        if let Some(stmt) = self.json_stmt(remap, table, ops, rows) {
            stmts.push(stmt);
            return;
        }
        // Some row has a value with no JSON form. Rows that carry their ids
        // may go in any order, so the others still go as JSON and only
        // those rows are bound; otherwise the run keeps its order, bound.
        // Steps keep their order too: of two inserts of one step, the first
        // makes the row, whose id is the step's.
        let with_ids = table != Table::Timesteps
            && rows
                .iter()
                .all(|&j| ops.get(j).is_some_and(|op| op.id().is_some()));
        let mut bound = Vec::with_capacity(rows.len());
        let mut json = Vec::with_capacity(rows.len());
        for &j in rows {
            let has_form = match ops.get(j) {
                Some(Op::Insert { values, .. }) => values.iter().all(has_json_form),
                _ => false,
            };
            if with_ids && has_form {
                json.push(j);
            } else {
                bound.push(j);
            }
        }
        if !json.is_empty() {
            match self.json_stmt(remap, table, ops, &json) {
                Some(stmt) => stmts.push(stmt),
                None => {
                    bound.extend(json);
                    bound.sort_unstable();
                }
            }
        }
        let mut rest = bound.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_rows(table, rest.len()));
            rest = tail;
            let mut args = Vec::with_capacity(chunk.len() * table.columns().len());
            for &j in chunk {
                if let Op::Insert { values, .. } = ops[j] {
                    let start = args.len();
                    args.extend(values.iter().map(Arg::of));
                    remap.args(table, &mut args[start..]);
                }
            }
            stmts.push(Stmt {
                sql: self.insert_text(table, chunk.len()),
                args,
                want_rows: false,
            });
        }
    }
}

/// The rows `rows` (indexes into `ops`) of `table` as one JSON array of
/// arrays, each filed under its step's real row as `remap` knows it; `None`
/// if a value has no JSON form.
fn json_rows(remap: &StepRemap, table: Table, ops: &[&Op], rows: &[usize]) -> Option<String> {
    let mut text = String::with_capacity(rows.len() * table.columns().len() * 16);
    let mut row: Vec<Arg<'_>> = Vec::with_capacity(table.columns().len());
    text.push('[');
    for (n, &j) in rows.iter().enumerate() {
        let Op::Insert { values, .. } = ops.get(j)? else {
            return None;
        };
        debug_assert_eq!(values.len(), table.columns().len(), "{table:?}");
        row.clear();
        row.extend(values.iter().map(Arg::of));
        remap.args(table, &mut row);
        if n > 0 {
            text.push(',');
        }
        push_json_row(&mut text, row.iter().map(|a| &*a.0))?;
    }
    text.push(']');
    Some(text)
}

/// Sets `completed_at` of the steps of `?1`, a JSON array of
/// `[completed_at, session_id, step_id]` (as [`UPDATE_TIMESTEP_SQL`] binds
/// them), one statement for a run's updates of steps.
const STEP_UPDATES_SQL: &str = "UPDATE session_timesteps SET completed_at = u.value ->> 0 \
     FROM json_each(?1) AS u \
     WHERE session_timesteps.session_id = u.value ->> 1 \
     AND session_timesteps.step_id = u.value ->> 2";

/// Which operations of `ops` are updates of steps that may join a run of
/// inserts and go in at its end, after its rows (see [`step_updates`]):
/// those whose values have a JSON form, unless an insert of the same step
/// comes later in the batch. Such an update finds no row if the step is
/// new, where at the run's end it would find the row the insert made; so
/// it goes alone, in its turn.
fn deferrable_step_updates(ops: &[&Op]) -> Vec<bool> {
    let mut inserted_later: HashSet<(&str, &str)> = HashSet::new();
    let mut deferrable = vec![false; ops.len()];
    for (k, op) in ops.iter().enumerate().rev() {
        match op {
            // By its names, whether or not its id is set.
            Op::Insert { .. } => {
                if let Some(names) = op.step_names() {
                    inserted_later.insert(names);
                }
            }
            Op::UpdateTimestep { values } => {
                deferrable[k] = op
                    .step_names()
                    .is_some_and(|names| !inserted_later.contains(&names))
                    && values.iter().all(has_json_form);
            }
            Op::UpdateSessionCounts { .. } => {}
        }
    }
    deferrable
}

/// The updates of steps `updates` (indexes into `ops`, in order) as one
/// statement: the last update of each step wins, as it would one after
/// another. `None` if there are none, or one names no step or has a value
/// with no JSON form.
fn step_updates<'a>(ops: &[&'a Op], updates: &[usize]) -> Option<Stmt<'a>> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut last: Vec<&[Value]> = Vec::with_capacity(updates.len());
    for &j in updates.iter().rev() {
        if let (Op::UpdateTimestep { values }, Some(names)) = (ops[j], ops[j].step_names()) {
            if seen.insert(names) {
                last.push(values);
            }
        }
    }
    if last.is_empty() {
        return None;
    }
    let mut text = String::with_capacity(last.len() * 96);
    text.push('[');
    for (n, values) in last.iter().rev().enumerate() {
        if n > 0 {
            text.push(',');
        }
        push_json_row(&mut text, values.iter())?;
    }
    text.push(']');
    Some(Stmt {
        sql: STEP_UPDATES_SQL.into(),
        args: vec![Arg::owned(Value::Text(text))],
        want_rows: false,
    })
}

impl EncodedTx {
    /// Whether `result` answers this batch, sent behind another, run before
    /// that one committed: see [`TxShape::ran_first`].
    pub(crate) fn ran_first(&self, result: &BatchResult) -> bool {
        self.shape.ran_first(result)
    }

    /// Whether it files its records as `remap` would now: nothing was learnt
    /// of a step made elsewhere since it was encoded.
    pub(crate) fn is_current(&self, remap: &StepRemap) -> bool {
        self.remaps == remap.learnt()
    }

    /// Reads the server's answer, and learns the real ids of the batch's
    /// steps into `remap`.
    ///
    /// # Errors
    /// `BEGIN`'s or `COMMIT`'s error, or a lease's, classed.
    pub(crate) fn read_answer(
        self,
        result: BatchResult,
        remap: &mut StepRemap,
    ) -> Result<RemoteBatch, DbError> {
        match self.shape.outcome(result)? {
            RemoteOutcome::Committed(results) => {
                // A step whose row was made elsewhere has another id than
                // ours: file the batches to come under it.
                let moved = self.id_read.and_then(|at| results.get(at));
                for row in moved.map_or(&[][..], |r| &r.rows[..]) {
                    let ours = row.first().and_then(hrana_integer);
                    let real = row.get(1).and_then(hrana_integer);
                    if let (Some(ours), Some(real)) = (ours, real) {
                        if ours != real {
                            remap.learn(ours, real);
                        }
                    }
                }
                for (at, ours) in self.id_reads {
                    let real = results
                        .get(at)
                        .and_then(|r| r.rows.first())
                        .and_then(|row| row.first())
                        .and_then(hrana_integer);
                    if let Some(real) = real.filter(|real| *real != ours) {
                        remap.learn(ours, real);
                    }
                }
                let mut leased = Vec::with_capacity(self.lease_reads.len());
                for (at, table, n) in self.lease_reads {
                    leased.push(remote_block(table, n, results.get(at))?);
                }
                Ok(RemoteBatch::Committed(leased))
            }
            RemoteOutcome::RanFirst => Ok(RemoteBatch::RanFirst),
            RemoteOutcome::Failed(failed) => {
                let mut by_op = Vec::new();
                for (at, e) in failed {
                    match self.carries.get(at) {
                        Some(Carries::One(j)) => by_op.push((*j, e)),
                        Some(Carries::Many) => return Ok(RemoteBatch::MultiRowFailed(e)),
                        _ => return Err(e),
                    }
                }
                Ok(RemoteBatch::Failed(by_op))
            }
        }
    }
}

#[cfg(test)]
mod tests;
