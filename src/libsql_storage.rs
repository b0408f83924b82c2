//! The plain per-operation backend, and the one executor that writes rows.
//!
//! Every row this crate writes is first turned into an `Op`: a table and the
//! values to bind, serialized by the caller. `Executor::apply` is the only
//! code that binds those values to SQL. [`LibsqlTraceStorage`] applies each
//! call as a batch of one; the writer's actor applies whole batches inside one
//! transaction through the same function.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use libsql::params::Params;
use libsql::{Connection, Database, Statement, Value};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value as Json;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::error::TracingError;
use crate::models::{
    BaseEventFields, EnvironmentEvent, EventReward, LMCAISEvent, MarkovBlanketMessage,
    MessageContent, OutcomeReward, RuntimeEvent, SessionTimeStep, SessionTrace, TimeRecord,
    TracingEvent,
};
use crate::schema;
use crate::storage::{DbKind, JournalMode, StorageConfig, TraceStorage};

// ============================================================================
// Opening a database
// ============================================================================

/// An open database and its one connection.
pub(crate) struct Opened {
    /// Kept so the database outlives the connection.
    pub(crate) _db: Database,
    pub(crate) conn: Connection,
    pub(crate) remote: bool,
}

/// Opens the database the config names, applies the pragmas and, with
/// `auto_init`, migrates the schema.
///
/// # Errors
/// `InvalidInput` for a bad URL or a missing folder; `Database` when the
/// database cannot be opened or reached.
pub(crate) async fn open(config: &StorageConfig) -> Result<Opened, TracingError> {
    let kind = config.kind()?;
    let (db, remote) = match &kind {
        DbKind::Memory => (libsql::Builder::new_local(":memory:").build().await?, false),
        DbKind::File(path) => {
            check_parent_exists(path)?;
            (libsql::Builder::new_local(path).build().await?, false)
        }
        DbKind::Remote(url) => {
            let token = config.auth_token.clone().unwrap_or_default();
            let db = libsql::Builder::new_remote(url.clone(), token)
                .build()
                .await?;
            (db, true)
        }
    };
    let conn = db.connect()?;
    if !remote {
        conn.busy_timeout(config.busy_timeout)?;
        if matches!(kind, DbKind::File(_)) {
            let mode = config.journal_mode.pragma();
            // `PRAGMA journal_mode` answers with a row, so it is a query.
            let mut rows = conn
                .query(&format!("PRAGMA journal_mode = {mode}"), ())
                .await?;
            let got: String = match rows.next().await? {
                Some(row) => row.get(0)?,
                None => String::new(),
            };
            if config.journal_mode == JournalMode::Wal && !got.eq_ignore_ascii_case("wal") {
                return Err(TracingError::Database(format!(
                    "could not switch the database to WAL mode (it reports `{got}`)"
                )));
            }
        }
        conn.execute(
            &format!("PRAGMA synchronous = {}", config.synchronous.pragma()),
            (),
        )
        .await?;
    }
    if config.auto_init {
        schema::migrate(&conn).await.map_err(|e| match e {
            TracingError::Database(msg) => {
                TracingError::Database(format!("cannot open `{}`: {msg}", config.db_url))
            }
            other => other,
        })?;
    }
    Ok(Opened {
        _db: db,
        conn,
        remote,
    })
}

fn check_parent_exists(path: &Path) -> Result<(), TracingError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            Err(TracingError::InvalidInput(format!(
                "the folder of database file `{}` does not exist",
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Whether a libsql error is worth retrying: busy, locked, I/O, disk full, or
/// a remote connection problem.
pub(crate) fn is_transient(err: &libsql::Error) -> bool {
    match err {
        libsql::Error::SqliteFailure(code, _) => {
            // Extended codes keep the primary code in the low byte.
            matches!(code & 0xff, 5 | 6 | 10 | 13)
        }
        libsql::Error::RemoteSqliteFailure(code, _, _) => matches!(code & 0xff, 5 | 6 | 10 | 13),
        libsql::Error::ConnectionFailed(_)
        | libsql::Error::Hrana(_)
        | libsql::Error::WriteDelegation(_) => true,
        _ => false,
    }
}

// ============================================================================
// Operations: rows serialized by the producer
// ============================================================================

/// A table this crate writes rows into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Table {
    Sessions,
    Timesteps,
    Events,
    Messages,
    OutcomeRewards,
    EventRewards,
}

impl Table {
    /// Tables whose ids the writer allocates.
    pub(crate) const WITH_IDS: [Table; 5] = [
        Table::Timesteps,
        Table::Events,
        Table::Messages,
        Table::OutcomeRewards,
        Table::EventRewards,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Sessions => "session_traces",
            Table::Timesteps => "session_timesteps",
            Table::Events => "events",
            Table::Messages => "messages",
            Table::OutcomeRewards => "outcome_rewards",
            Table::EventRewards => "event_rewards",
        }
    }

    /// Index into [`Table::WITH_IDS`], for tables that have ids.
    pub(crate) fn id_slot(self) -> Option<usize> {
        Table::WITH_IDS.iter().position(|t| *t == self)
    }

    /// The columns bound by an insert, in bind order.
    pub(crate) fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Sessions => &["session_id", "created_at", "metadata"],
            Table::Timesteps => &[
                "id",
                "session_id",
                "step_id",
                "step_index",
                "turn_number",
                "started_at",
                "completed_at",
                "step_metadata",
            ],
            Table::Events => &EVENT_COLUMNS,
            Table::Messages => &MESSAGE_COLUMNS,
            Table::OutcomeRewards => &[
                "id",
                "session_id",
                "objective_key",
                "total_reward",
                "achievements_count",
                "total_steps",
                "created_at",
                "reward_metadata",
                "annotation",
            ],
            Table::EventRewards => &[
                "id",
                "event_id",
                "session_id",
                "message_id",
                "turn_number",
                "objective_key",
                "reward_value",
                "reward_type",
                "key",
                "annotation",
                "source",
                "created_at",
            ],
        }
    }

    /// Position of `session_id` among the bound values.
    fn session_column(self) -> usize {
        match self {
            Table::Sessions => 0,
            Table::EventRewards => 2,
            _ => 1,
        }
    }

    fn on_conflict(self) -> &'static str {
        match self {
            Table::Sessions => " ON CONFLICT(session_id) DO NOTHING",
            Table::Timesteps => " ON CONFLICT(session_id, step_id) DO NOTHING",
            _ => "",
        }
    }

    /// `INSERT` of `rows` rows; with `returning`, the statement yields the id.
    pub(crate) fn insert_sql(self, rows: usize, returning: bool) -> String {
        let cols = self.columns();
        let one = format!("({})", vec!["?"; cols.len()].join(", "));
        let values = vec![one; rows.max(1)].join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES {}{}{}",
            self.name(),
            cols.join(", "),
            values,
            self.on_conflict(),
            if returning { " RETURNING id" } else { "" }
        )
    }
}

const EVENT_COLUMNS: [&str; 26] = [
    "id",
    "session_id",
    "timestep_id",
    "event_type",
    "system_instance_id",
    "event_time",
    "message_time",
    "model_name",
    "provider",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_cents",
    "latency_ms",
    "call_records",
    "reward",
    "terminated",
    "truncated",
    "system_state_before",
    "system_state_after",
    "metadata",
    "event_metadata",
    "cost_usd",
    "span_id",
    "trace_id",
    "actions",
];

const MESSAGE_COLUMNS: [&str; 10] = [
    "id",
    "session_id",
    "timestep_id",
    "message_type",
    "content",
    "event_time",
    "message_time",
    "metadata",
    "content_kind",
    "json_payload",
];

const UPDATE_TIMESTEP_SQL: &str =
    "UPDATE session_timesteps SET completed_at = ? WHERE session_id = ? AND step_id = ?";

const UPDATE_COUNTS_SQL: &str = "UPDATE session_traces SET \
     num_timesteps = (SELECT COUNT(*) FROM session_timesteps WHERE session_id = ?1), \
     num_events = (SELECT COUNT(*) FROM events WHERE session_id = ?1), \
     num_messages = (SELECT COUNT(*) FROM messages WHERE session_id = ?1) \
     WHERE session_id = ?1";

/// One write, with every value already serialized for binding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// An insert; for tables with ids, `values[0]` is the id, or `Null` to let
    /// AUTOINCREMENT choose it.
    Insert { table: Table, values: Vec<Value> },
    /// `completed_at`, `session_id`, `step_id`.
    UpdateTimestep { values: Vec<Value> },
    /// Recomputes the three counts of a session.
    UpdateSessionCounts { session_id: String },
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Integer)
}

fn time_text(t: &DateTime<Utc>) -> Value {
    Value::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn json_text<T: Serialize + ?Sized>(v: &T) -> Result<Value, TracingError> {
    Ok(Value::Text(serde_json::to_string(v)?))
}

fn opt_json<T: Serialize>(v: Option<&T>) -> Result<Value, TracingError> {
    v.map_or(Ok(Value::Null), json_text)
}

fn map_json(m: &HashMap<String, Json>) -> Result<Value, TracingError> {
    // `BTreeMap` order makes the stored text deterministic.
    let sorted: std::collections::BTreeMap<&String, &Json> = m.iter().collect();
    json_text(&sorted)
}

fn finite(what: &str, v: f64) -> Result<f64, TracingError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(TracingError::InvalidInput(format!(
            "{what} must be a finite number, got {v}"
        )))
    }
}

fn non_empty(what: &str, v: &str) -> Result<(), TracingError> {
    if v.is_empty() {
        Err(TracingError::InvalidInput(format!("{what} is empty")))
    } else {
        Ok(())
    }
}

impl Op {
    /// The session row.
    pub(crate) fn session(
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Json,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        Ok(Op::Insert {
            table: Table::Sessions,
            values: vec![
                text(session_id),
                time_text(&created_at),
                json_text(metadata)?,
            ],
        })
    }

    /// A timestep row; `id` is `None` for AUTOINCREMENT.
    pub(crate) fn timestep(
        id: Option<i64>,
        session_id: &str,
        step: &SessionTimeStep,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        non_empty("step_id", &step.step_id)?;
        Ok(Op::Insert {
            table: Table::Timesteps,
            values: vec![
                opt_int(id),
                text(session_id),
                text(&step.step_id),
                Value::Integer(step.step_index.into()),
                opt_int(step.turn_number.map(i64::from)),
                time_text(&step.timestamp),
                step.completed_at.as_ref().map_or(Value::Null, time_text),
                map_json(&step.step_metadata)?,
            ],
        })
    }

    /// Sets a timestep's `completed_at`.
    pub(crate) fn update_timestep(
        session_id: &str,
        step_id: &str,
        completed_at: Option<DateTime<Utc>>,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        non_empty("step_id", step_id)?;
        Ok(Op::UpdateTimestep {
            values: vec![
                completed_at.as_ref().map_or(Value::Null, time_text),
                text(session_id),
                text(step_id),
            ],
        })
    }

    /// Recomputes a session's counts.
    pub(crate) fn update_counts(session_id: &str) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        Ok(Op::UpdateSessionCounts {
            session_id: session_id.to_string(),
        })
    }

    /// An event row.
    pub(crate) fn event(
        id: Option<i64>,
        session_id: &str,
        timestep_id: Option<i64>,
        event: &TracingEvent,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        let base = event.base();
        let time = finite("event_time", base.time_record.event_time)?;
        let mut v = vec![Value::Null; EVENT_COLUMNS.len()];
        v[0] = opt_int(id);
        v[1] = text(session_id);
        v[2] = opt_int(timestep_id);
        v[3] = text(event.event_type().as_str());
        v[4] = text(&base.system_instance_id);
        v[5] = Value::Real(time);
        v[6] = opt_int(base.time_record.message_time);
        v[20] = map_json(&base.metadata)?;
        v[21] = opt_json(base.event_metadata.as_ref())?;
        match event {
            TracingEvent::Cais(e) => {
                v[7] = text(&e.model_name);
                v[8] = opt_text(e.provider.as_deref());
                v[9] = opt_int(e.input_tokens.map(i64::from));
                v[10] = opt_int(e.output_tokens.map(i64::from));
                v[11] = opt_int(e.total_tokens.map(i64::from));
                if let Some(cost) = e.cost_usd {
                    let cost = finite("cost_usd", cost)?;
                    v[12] = Value::Integer((cost * 100.0).round() as i64);
                    v[22] = Value::Real(cost);
                }
                v[13] = opt_int(e.latency_ms.map(i64::from));
                if let Some(records) = &e.call_records {
                    for r in records {
                        if let Some(cost) = r.usage.as_ref().and_then(|u| u.cost_usd) {
                            finite("call record cost_usd", cost)?;
                        }
                    }
                    v[14] = json_text(records)?;
                }
                v[18] = opt_json(e.system_state_before.as_ref())?;
                v[19] = opt_json(e.system_state_after.as_ref())?;
                v[23] = opt_text(e.span_id.as_deref());
                v[24] = opt_text(e.trace_id.as_deref());
            }
            TracingEvent::Environment(e) => {
                v[15] = Value::Real(finite("reward", e.reward)?);
                v[16] = Value::Integer(e.terminated.into());
                v[17] = Value::Integer(e.truncated.into());
                v[18] = opt_json(e.system_state_before.as_ref())?;
                v[19] = opt_json(e.system_state_after.as_ref())?;
            }
            TracingEvent::Runtime(e) => {
                v[25] = json_text(&e.actions)?;
            }
        }
        Ok(Op::Insert {
            table: Table::Events,
            values: v,
        })
    }

    /// A message row.
    pub(crate) fn message(
        id: Option<i64>,
        session_id: &str,
        timestep_id: Option<i64>,
        msg: &MarkovBlanketMessage,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        let time = finite("event_time", msg.time_record.event_time)?;
        // `content` keeps the original meaning (text, else JSON); the kind and
        // a second column make the read lossless.
        let (content, kind, payload) = match (&msg.content.text, &msg.content.json_payload) {
            (Some(t), None) => (text(t), Value::Null, Value::Null),
            (None, Some(j)) => (text(j), text("json"), Value::Null),
            (Some(t), Some(j)) => (text(t), text("both"), text(j)),
            (None, None) => (Value::Null, Value::Null, Value::Null),
        };
        Ok(Op::Insert {
            table: Table::Messages,
            values: vec![
                opt_int(id),
                text(session_id),
                opt_int(timestep_id),
                text(&msg.message_type),
                content,
                Value::Real(time),
                opt_int(msg.time_record.message_time),
                map_json(&msg.metadata)?,
                kind,
                payload,
            ],
        })
    }

    /// An outcome reward row.
    pub(crate) fn outcome_reward(
        id: Option<i64>,
        session_id: &str,
        reward: &OutcomeReward,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        Ok(Op::Insert {
            table: Table::OutcomeRewards,
            values: vec![
                opt_int(id),
                text(session_id),
                text(&reward.objective_key),
                Value::Real(finite("total_reward", reward.total_reward)?),
                Value::Integer(reward.achievements_count.into()),
                Value::Integer(reward.total_steps.into()),
                time_text(&Utc::now()),
                map_json(&reward.reward_metadata)?,
                opt_json(reward.annotation.as_ref())?,
            ],
        })
    }

    /// An event reward row.
    pub(crate) fn event_reward(
        id: Option<i64>,
        session_id: &str,
        event_id: i64,
        message_id: Option<i64>,
        turn_number: Option<i32>,
        reward: &EventReward,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        Ok(Op::Insert {
            table: Table::EventRewards,
            values: vec![
                opt_int(id),
                Value::Integer(event_id),
                text(session_id),
                opt_int(message_id),
                opt_int(turn_number.map(i64::from)),
                text(&reward.objective_key),
                Value::Real(finite("reward_value", reward.reward_value)?),
                opt_text(reward.reward_type.as_deref()),
                opt_text(reward.key.as_deref()),
                opt_json(reward.annotation.as_ref())?,
                opt_text(reward.source.as_deref()),
                time_text(&Utc::now()),
            ],
        })
    }

    /// The session the operation belongs to, for logs.
    pub(crate) fn session_id(&self) -> &str {
        let v = match self {
            Op::Insert { table, values } => values.get(table.session_column()),
            Op::UpdateTimestep { values } => values.get(1),
            Op::UpdateSessionCounts { session_id } => return session_id,
        };
        match v {
            Some(Value::Text(s)) => s,
            _ => "",
        }
    }

    /// A short name of the operation, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::Insert { table, .. } => match table {
                Table::Sessions => "ensure_session",
                Table::Timesteps => "ensure_timestep",
                Table::Events => "insert_event",
                Table::Messages => "insert_message",
                Table::OutcomeRewards => "insert_outcome_reward",
                Table::EventRewards => "insert_event_reward",
            },
            Op::UpdateTimestep { .. } => "update_timestep",
            Op::UpdateSessionCounts { .. } => "update_session_counts",
        }
    }

    /// Memory held by the queued operation, for the byte bound: the queue
    /// slot, the value vector and each string, with the allocator's
    /// per-allocation overhead (16 bytes, rounded to 16), so the bound holds
    /// for real resident memory rather than payload bytes.
    pub(crate) fn size_bytes(&self) -> usize {
        const SLOT: usize = 96;
        fn alloc(n: usize) -> usize {
            (n + 16).div_ceil(16) * 16
        }
        let values = match self {
            Op::Insert { values, .. } | Op::UpdateTimestep { values } => values.as_slice(),
            Op::UpdateSessionCounts { session_id } => return SLOT + alloc(session_id.len()),
        };
        SLOT + alloc(std::mem::size_of_val(values))
            + values
                .iter()
                .map(|v| match v {
                    Value::Text(s) => alloc(s.capacity()),
                    Value::Blob(b) => alloc(b.capacity()),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

// ============================================================================
// The executor: the one place that writes rows
// ============================================================================

/// Applies [`Op`]s on one connection, reusing prepared statements.
pub(crate) struct Executor {
    pub(crate) conn: Connection,
    remote: bool,
    /// Prepared statements by (table, returning). Remote connections do not
    /// cache: each statement is a round trip either way.
    inserts: HashMap<(Table, bool), Statement>,
    update_timestep: Option<Statement>,
    update_counts: Option<Statement>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Executor {
    pub(crate) fn new(conn: Connection, remote: bool) -> Self {
        Self {
            conn,
            remote,
            inserts: HashMap::new(),
            update_timestep: None,
            update_counts: None,
        }
    }

    /// Whether the connection is to a remote server.
    pub(crate) fn is_remote(&self) -> bool {
        self.remote
    }

    /// Applies one operation. An insert whose id is `Null` returns the id the
    /// database chose; `Ok(None)` means the row already existed (ensure calls)
    /// or the operation has no id.
    ///
    /// # Errors
    /// `Database` with the statement's error; the caller decides whether the
    /// enclosing transaction survives (see [`Executor::in_transaction`]).
    pub(crate) async fn apply(&mut self, op: &Op) -> Result<Option<i64>, TracingError> {
        match op {
            Op::Insert { table, values } => {
                let returning = *table != Table::Sessions && values[0] == Value::Null;
                let params = Params::Positional(values.clone());
                if self.remote {
                    let sql = table.insert_sql(1, returning);
                    if returning {
                        let mut rows = self.conn.query(&sql, params).await?;
                        return Ok(match rows.next().await? {
                            Some(row) => Some(row.get::<i64>(0)?),
                            None => None,
                        });
                    }
                    self.conn.execute(&sql, params).await?;
                    return Ok(None);
                }
                let stmt = match self.inserts.entry((*table, returning)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.conn.prepare(&table.insert_sql(1, returning)).await?)
                    }
                };
                // A statement must be reset before it is bound again.
                stmt.reset();
                if returning {
                    let result = async {
                        let mut rows = stmt.query(params).await?;
                        Ok::<_, libsql::Error>(match rows.next().await? {
                            Some(row) => Some(row.get::<i64>(0)?),
                            None => None,
                        })
                    }
                    .await;
                    stmt.reset();
                    Ok(result?)
                } else {
                    let result = stmt.execute(params).await;
                    stmt.reset();
                    result?;
                    Ok(None)
                }
            }
            Op::UpdateTimestep { values } => {
                let params = Params::Positional(values.clone());
                self.run_cached(CachedKind::UpdateTimestep, params).await?;
                Ok(None)
            }
            Op::UpdateSessionCounts { session_id } => {
                let params = Params::Positional(vec![text(session_id)]);
                self.run_cached(CachedKind::UpdateCounts, params).await?;
                Ok(None)
            }
        }
    }

    async fn run_cached(&mut self, kind: CachedKind, params: Params) -> Result<(), TracingError> {
        let sql = match kind {
            CachedKind::UpdateTimestep => UPDATE_TIMESTEP_SQL,
            CachedKind::UpdateCounts => UPDATE_COUNTS_SQL,
        };
        if self.remote {
            self.conn.execute(sql, params).await?;
            return Ok(());
        }
        let slot = match kind {
            CachedKind::UpdateTimestep => &mut self.update_timestep,
            CachedKind::UpdateCounts => &mut self.update_counts,
        };
        if slot.is_none() {
            *slot = Some(self.conn.prepare(sql).await?);
        }
        let stmt = slot.as_mut().expect(crate::error::BUG);
        stmt.reset();
        let result = stmt.execute(params).await;
        stmt.reset();
        result?;
        Ok(())
    }

    /// Inserts a batch of rows of one table with ids already assigned, in as
    /// few statements as SQLite's bound-parameter limit allows. Used on
    /// remote connections, where each statement is a network round trip.
    pub(crate) async fn insert_multi(
        &mut self,
        table: Table,
        rows: &[&Vec<Value>],
    ) -> Result<(), TracingError> {
        let per_row = table.columns().len();
        let max_rows = (MAX_BOUND_PARAMS / per_row).max(1);
        for chunk in rows.chunks(max_rows) {
            let mut values = Vec::with_capacity(chunk.len() * per_row);
            for row in chunk {
                values.extend(row.iter().cloned());
            }
            self.conn
                .execute(
                    &table.insert_sql(chunk.len(), false),
                    Params::Positional(values),
                )
                .await?;
        }
        Ok(())
    }

    /// Applies an operation, skipping an insert whose row (by id or unique
    /// key) already exists; returns how many rows were inserted.
    pub(crate) async fn apply_ignoring_duplicates(
        &mut self,
        op: &Op,
    ) -> Result<usize, TracingError> {
        match op {
            Op::Insert { table, values } => {
                let sql =
                    table
                        .insert_sql(1, false)
                        .replacen("INSERT INTO", "INSERT OR IGNORE INTO", 1);
                Ok(self
                    .conn
                    .execute(&sql, Params::Positional(values.clone()))
                    .await? as usize)
            }
            other => self.apply(other).await.map(|_| 0),
        }
    }

    /// Whether a transaction is open (SQLite rolls some back on its own after
    /// an error, such as a full disk).
    pub(crate) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }
}

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32 is 32766; stay
/// well under it so that older servers accept the statements too.
const MAX_BOUND_PARAMS: usize = 999;

#[derive(Clone, Copy)]
enum CachedKind {
    UpdateTimestep,
    UpdateCounts,
}

// ============================================================================
// Reads, shared by both backends
// ============================================================================

async fn first_i64(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
) -> Result<Option<i64>, TracingError> {
    let mut rows = conn.query(sql, params).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(row.get::<i64>(0)?)),
        None => Ok(None),
    }
}

/// The id of a stored timestep.
pub(crate) async fn find_timestep(
    conn: &Connection,
    session_id: &str,
    step_id: &str,
) -> Result<Option<i64>, TracingError> {
    first_i64(
        conn,
        "SELECT id FROM session_timesteps WHERE session_id = ? AND step_id = ?",
        vec![text(session_id), text(step_id)],
    )
    .await
}

/// Every stored step of a session, as `(step_id, id)`.
pub(crate) async fn load_steps(
    conn: &Connection,
    session_id: &str,
) -> Result<Vec<(String, i64)>, TracingError> {
    let mut rows = conn
        .query(
            "SELECT step_id, id FROM session_timesteps WHERE session_id = ?",
            vec![text(session_id)],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get::<String>(0)?, row.get::<i64>(1)?));
    }
    Ok(out)
}

/// Deletes a session and everything that belongs to it, in one transaction
/// unless the caller already holds one.
pub(crate) async fn delete_session(
    conn: &Connection,
    session_id: &str,
) -> Result<bool, TracingError> {
    let own_tx = conn.is_autocommit();
    if own_tx {
        conn.execute("BEGIN IMMEDIATE", ()).await?;
    }
    let result = async {
        for table in [
            "event_rewards",
            "outcome_rewards",
            "messages",
            "events",
            "session_timesteps",
        ] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE session_id = ?"),
                vec![text(session_id)],
            )
            .await?;
        }
        let n = conn
            .execute(
                "DELETE FROM session_traces WHERE session_id = ?",
                vec![text(session_id)],
            )
            .await?;
        Ok::<_, TracingError>(n > 0)
    }
    .await;
    if own_tx {
        match &result {
            Ok(_) => conn.execute("COMMIT", ()).await?,
            // Best effort: the delete's own error is the one to report.
            Err(_) => conn.execute("ROLLBACK", ()).await.unwrap_or(0),
        };
    }
    result
}

fn json_param(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer((*b).into()),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}

fn value_json(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => Json::from(i),
        Value::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s),
        Value::Blob(b) => Json::Array(b.into_iter().map(Json::from).collect()),
    }
}

/// Runs arbitrary SQL with JSON parameters; one JSON object per row.
pub(crate) async fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Json],
) -> Result<Vec<Json>, TracingError> {
    let params: Vec<Value> = params.iter().map(json_param).collect();
    let mut rows = conn.query(sql, params).await?;
    let names: Vec<String> = (0..rows.column_count())
        .map(|i| rows.column_name(i).unwrap_or("").to_string())
        .collect();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        let mut obj = serde_json::Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            obj.insert(name.clone(), value_json(row.get_value(i as i32)?));
        }
        out.push(Json::Object(obj));
    }
    Ok(out)
}

fn col_text(row: &libsql::Row, i: i32) -> Result<Option<String>, TracingError> {
    match row.get_value(i)? {
        Value::Null => Ok(None),
        Value::Text(s) => Ok(Some(s)),
        Value::Integer(n) => Ok(Some(n.to_string())),
        Value::Real(f) => Ok(Some(f.to_string())),
        Value::Blob(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
    }
}

fn col_i64(row: &libsql::Row, i: i32) -> Result<Option<i64>, TracingError> {
    match row.get_value(i)? {
        Value::Integer(n) => Ok(Some(n)),
        Value::Real(f) => Ok(Some(f as i64)),
        Value::Text(s) => Ok(s.parse().ok()),
        _ => Ok(None),
    }
}

fn col_i32(row: &libsql::Row, i: i32) -> Result<Option<i32>, TracingError> {
    Ok(col_i64(row, i)?.and_then(|n| i32::try_from(n).ok()))
}

fn col_f64(row: &libsql::Row, i: i32) -> Result<Option<f64>, TracingError> {
    match row.get_value(i)? {
        Value::Integer(n) => Ok(Some(n as f64)),
        Value::Real(f) => Ok(Some(f)),
        Value::Text(s) => Ok(s.parse().ok()),
        _ => Ok(None),
    }
}

fn col_json<T: DeserializeOwned>(row: &libsql::Row, i: i32) -> Result<Option<T>, TracingError> {
    match col_text(row, i)? {
        None => Ok(None),
        Some(s) => Ok(Some(serde_json::from_str(&s)?)),
    }
}

fn col_map(row: &libsql::Row, i: i32) -> Result<HashMap<String, Json>, TracingError> {
    match col_json::<Json>(row, i)? {
        Some(Json::Object(m)) => Ok(m.into_iter().collect()),
        _ => Ok(HashMap::new()),
    }
}

fn col_time(row: &libsql::Row, i: i32) -> Result<Option<DateTime<Utc>>, TracingError> {
    match col_text(row, i)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| TracingError::Serialization(format!("bad timestamp `{s}`: {e}"))),
    }
}

fn decode_event(row: &libsql::Row) -> Result<(Option<i64>, TracingEvent), TracingError> {
    // Columns as in EVENT_COLUMNS, selected in that order.
    let timestep_id = col_i64(row, 2)?;
    let base = BaseEventFields {
        system_instance_id: col_text(row, 4)?.unwrap_or_default(),
        time_record: TimeRecord {
            event_time: col_f64(row, 5)?.unwrap_or_default(),
            message_time: col_i64(row, 6)?,
        },
        metadata: col_map(row, 20)?,
        event_metadata: col_json(row, 21)?,
    };
    let kind = col_text(row, 3)?.unwrap_or_default();
    let event = match kind.as_str() {
        "cais" => TracingEvent::Cais(LMCAISEvent {
            base,
            model_name: col_text(row, 7)?.unwrap_or_default(),
            provider: col_text(row, 8)?,
            input_tokens: col_i32(row, 9)?,
            output_tokens: col_i32(row, 10)?,
            total_tokens: col_i32(row, 11)?,
            // Rows from the original module have only the rounded cents.
            cost_usd: match col_f64(row, 22)? {
                Some(c) => Some(c),
                None => col_i64(row, 12)?.map(|c| c as f64 / 100.0),
            },
            latency_ms: col_i32(row, 13)?,
            span_id: col_text(row, 23)?,
            trace_id: col_text(row, 24)?,
            call_records: col_json(row, 14)?,
            system_state_before: col_json(row, 18)?,
            system_state_after: col_json(row, 19)?,
        }),
        "environment" => TracingEvent::Environment(EnvironmentEvent {
            base,
            reward: col_f64(row, 15)?.unwrap_or_default(),
            terminated: col_i64(row, 16)?.unwrap_or_default() != 0,
            truncated: col_i64(row, 17)?.unwrap_or_default() != 0,
            system_state_before: col_json(row, 18)?,
            system_state_after: col_json(row, 19)?,
        }),
        "runtime" => TracingEvent::Runtime(RuntimeEvent {
            base,
            actions: col_json(row, 25)?.unwrap_or_default(),
        }),
        other => {
            return Err(TracingError::Serialization(format!(
                "unknown event_type `{other}` in the events table"
            )))
        }
    };
    Ok((timestep_id, event))
}

fn decode_message(row: &libsql::Row) -> Result<(Option<i64>, MarkovBlanketMessage), TracingError> {
    let timestep_id = col_i64(row, 2)?;
    let content = col_text(row, 4)?;
    let content = match col_text(row, 8)?.as_deref() {
        Some("json") => MessageContent {
            text: None,
            json_payload: content,
        },
        Some("both") => MessageContent {
            text: content,
            json_payload: col_text(row, 9)?,
        },
        _ => MessageContent {
            text: content,
            json_payload: None,
        },
    };
    let msg = MarkovBlanketMessage {
        content,
        message_type: col_text(row, 3)?.unwrap_or_default(),
        time_record: TimeRecord {
            event_time: col_f64(row, 5)?.unwrap_or_default(),
            message_time: col_i64(row, 6)?,
        },
        metadata: col_map(row, 7)?,
    };
    Ok((timestep_id, msg))
}

/// Reads a whole session: steps in step order, each with its events and
/// messages, and the full histories in id order.
pub(crate) async fn get_session(
    conn: &Connection,
    session_id: &str,
) -> Result<Option<SessionTrace>, TracingError> {
    let mut rows = conn
        .query(
            "SELECT created_at, metadata FROM session_traces WHERE session_id = ?",
            vec![text(session_id)],
        )
        .await?;
    let Some(row) = rows.next().await? else {
        return Ok(None);
    };
    let created_at = col_time(&row, 0)?.unwrap_or_default();
    let metadata = col_map(&row, 1)?;
    drop(rows);

    let mut steps = Vec::new();
    let mut step_pos = HashMap::new();
    let mut rows = conn
        .query(
            "SELECT id, step_id, step_index, turn_number, started_at, completed_at, step_metadata \
             FROM session_timesteps WHERE session_id = ? ORDER BY step_index, id",
            vec![text(session_id)],
        )
        .await?;
    while let Some(row) = rows.next().await? {
        let id = col_i64(&row, 0)?.unwrap_or_default();
        step_pos.insert(id, steps.len());
        steps.push(SessionTimeStep {
            step_id: col_text(&row, 1)?.unwrap_or_default(),
            step_index: col_i32(&row, 2)?.unwrap_or_default(),
            timestamp: col_time(&row, 4)?.unwrap_or_default(),
            turn_number: col_i32(&row, 3)?,
            events: Vec::new(),
            markov_blanket_messages: Vec::new(),
            step_metadata: col_map(&row, 6)?,
            completed_at: col_time(&row, 5)?,
        });
    }
    drop(rows);

    let mut event_history = Vec::new();
    let mut rows = conn
        .query(
            &format!(
                "SELECT {} FROM events WHERE session_id = ? ORDER BY id",
                EVENT_COLUMNS.join(", ")
            ),
            vec![text(session_id)],
        )
        .await?;
    while let Some(row) = rows.next().await? {
        let (ts, event) = decode_event(&row)?;
        if let Some(pos) = ts.and_then(|id| step_pos.get(&id)) {
            steps[*pos].events.push(event.clone());
        }
        event_history.push(event);
    }
    drop(rows);

    let mut message_history = Vec::new();
    let mut rows = conn
        .query(
            &format!(
                "SELECT {} FROM messages WHERE session_id = ? ORDER BY id",
                MESSAGE_COLUMNS.join(", ")
            ),
            vec![text(session_id)],
        )
        .await?;
    while let Some(row) = rows.next().await? {
        let (ts, msg) = decode_message(&row)?;
        if let Some(pos) = ts.and_then(|id| step_pos.get(&id)) {
            steps[*pos].markov_blanket_messages.push(msg.clone());
        }
        message_history.push(msg);
    }

    Ok(Some(SessionTrace {
        session_id: session_id.to_string(),
        created_at,
        session_time_steps: steps,
        event_history,
        markov_blanket_message_history: message_history,
        metadata,
    }))
}

// ============================================================================
// The plain backend
// ============================================================================

/// The plain backend: one statement per call, as the original module ran.
///
/// It is the baseline the [`crate::BufferedTraceWriter`] beats, and the
/// simplest correct choice for a single, slow producer. Each call holds the
/// connection for its statement, so concurrent callers queue on a lock.
///
/// ```
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use trace_writer::{LibsqlTraceStorage, TraceStorage};
///
/// let storage = LibsqlTraceStorage::new_memory().await?;
/// storage.ensure_session("s1", chrono::Utc::now(), &serde_json::json!({})).await?;
/// assert!(storage.get_session("s1").await?.is_some());
/// storage.close().await?;
/// assert!(storage.get_session("s1").await.is_err());
/// # Ok::<(), trace_writer::TracingError>(()) }).unwrap(); }
/// ```
pub struct LibsqlTraceStorage {
    config: StorageConfig,
    /// `None` once closed. A tokio mutex, because the guard is held across
    /// the statement's `.await`.
    inner: Mutex<Option<PlainInner>>,
}

struct PlainInner {
    _db: Database,
    exec: Executor,
}

impl std::fmt::Debug for LibsqlTraceStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibsqlTraceStorage")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LibsqlTraceStorage {
    /// Opens the database the config names and, with `auto_init`, migrates
    /// its schema.
    ///
    /// # Errors
    /// `InvalidInput` for a bad URL or missing folder, `Database` when the
    /// database cannot be opened, reached or migrated.
    pub async fn new(config: StorageConfig) -> Result<Self, TracingError> {
        let opened = open(&config).await?;
        Ok(Self {
            config,
            inner: Mutex::new(Some(PlainInner {
                _db: opened._db,
                exec: Executor::new(opened.conn, opened.remote),
            })),
        })
    }

    /// An in-memory database.
    ///
    /// # Errors
    /// As [`LibsqlTraceStorage::new`].
    pub async fn new_memory() -> Result<Self, TracingError> {
        Self::new(StorageConfig::memory()).await
    }

    /// A file database at `path`, in WAL mode.
    ///
    /// # Errors
    /// As [`LibsqlTraceStorage::new`].
    pub async fn new_file(path: &str) -> Result<Self, TracingError> {
        Self::new(StorageConfig::file(path)).await
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// The executor, held for the duration of one call; `NotInitialized`
    /// once closed.
    async fn exec(&self) -> Result<MappedMutexGuard<'_, Executor>, TracingError> {
        MutexGuard::try_map(self.inner.lock().await, |inner| {
            inner.as_mut().map(|i| &mut i.exec)
        })
        .map_err(|_| TracingError::NotInitialized)
    }

    async fn apply(&self, op: Op) -> Result<Option<i64>, TracingError> {
        self.exec().await?.apply(&op).await
    }

    async fn insert(&self, op: Op) -> Result<i64, TracingError> {
        self.apply(op).await?.ok_or_else(|| {
            TracingError::Internal("the database returned no id for an insert".into())
        })
    }
}

#[async_trait]
impl TraceStorage for LibsqlTraceStorage {
    async fn initialize(&self) -> Result<(), TracingError> {
        schema::migrate(&self.exec().await?.conn).await
    }

    async fn close(&self) -> Result<(), TracingError> {
        // Dropping the connection closes it; a second close is a no-op.
        self.inner.lock().await.take();
        Ok(())
    }

    async fn ensure_session(
        &self,
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Json,
    ) -> Result<(), TracingError> {
        let op = Op::session(session_id, created_at, metadata)?;
        self.apply(op).await.map(|_| ())
    }

    async fn get_session(&self, session_id: &str) -> Result<Option<SessionTrace>, TracingError> {
        get_session(&self.exec().await?.conn, session_id).await
    }

    async fn delete_session(&self, session_id: &str) -> Result<bool, TracingError> {
        delete_session(&self.exec().await?.conn, session_id).await
    }

    async fn ensure_timestep(
        &self,
        session_id: &str,
        step: &SessionTimeStep,
    ) -> Result<i64, TracingError> {
        let op = Op::timestep(None, session_id, step)?;
        let mut exec = self.exec().await?;
        // Look first, so that a repeated call uses up no id.
        if let Some(id) = find_timestep(&exec.conn, session_id, &step.step_id).await? {
            return Ok(id);
        }
        match exec.apply(&op).await? {
            Some(id) => Ok(id),
            // Another connection inserted it between the two statements.
            None => find_timestep(&exec.conn, session_id, &step.step_id)
                .await?
                .ok_or_else(|| TracingError::Internal("timestep vanished after insert".into())),
        }
    }

    async fn update_timestep(
        &self,
        session_id: &str,
        step_id: &str,
        completed_at: Option<DateTime<Utc>>,
    ) -> Result<(), TracingError> {
        let op = Op::update_timestep(session_id, step_id, completed_at)?;
        self.apply(op).await.map(|_| ())
    }

    async fn insert_event(
        &self,
        session_id: &str,
        timestep_db_id: Option<i64>,
        event: &TracingEvent,
    ) -> Result<i64, TracingError> {
        self.insert(Op::event(None, session_id, timestep_db_id, event)?)
            .await
    }

    async fn insert_message(
        &self,
        session_id: &str,
        timestep_db_id: Option<i64>,
        msg: &MarkovBlanketMessage,
    ) -> Result<i64, TracingError> {
        self.insert(Op::message(None, session_id, timestep_db_id, msg)?)
            .await
    }

    async fn insert_outcome_reward(
        &self,
        session_id: &str,
        reward: &OutcomeReward,
    ) -> Result<i64, TracingError> {
        self.insert(Op::outcome_reward(None, session_id, reward)?)
            .await
    }

    async fn insert_event_reward(
        &self,
        session_id: &str,
        event_id: i64,
        message_id: Option<i64>,
        turn_number: Option<i32>,
        reward: &EventReward,
    ) -> Result<i64, TracingError> {
        self.insert(Op::event_reward(
            None,
            session_id,
            event_id,
            message_id,
            turn_number,
            reward,
        )?)
        .await
    }

    async fn query(&self, sql: &str, params: Vec<Json>) -> Result<Vec<Json>, TracingError> {
        run_query(&self.exec().await?.conn, sql, &params).await
    }

    async fn update_session_counts(&self, session_id: &str) -> Result<(), TracingError> {
        let op = Op::update_counts(session_id)?;
        self.apply(op).await.map(|_| ())
    }
}

// ============================================================================
// Id leases for the writer
// ============================================================================

/// Reserves `n` ids of `table` in one committed transaction, by raising the
/// table's `sqlite_sequence` row past them. AUTOINCREMENT never hands out an
/// id at or below that row, and every writer leases the same way, so the
/// block is this caller's alone.
///
/// # Errors
/// `Database`; the transaction is rolled back.
pub(crate) async fn lease_ids(
    conn: &Connection,
    table: Table,
    n: i64,
) -> Result<std::ops::Range<i64>, TracingError> {
    conn.execute("BEGIN IMMEDIATE", ()).await?;
    let result = async {
        let name = table.name();
        let seq = first_i64(
            conn,
            "SELECT seq FROM sqlite_sequence WHERE name = ?",
            vec![text(name)],
        )
        .await?;
        let max = first_i64(
            conn,
            &format!("SELECT COALESCE(MAX(id), 0) FROM {name}"),
            vec![],
        )
        .await?
        .unwrap_or(0);
        let start = seq.unwrap_or(0).max(max) + 1;
        let end = start + n;
        if seq.is_some() {
            conn.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = ?",
                vec![Value::Integer(end - 1), text(name)],
            )
            .await?;
        } else {
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                vec![text(name), Value::Integer(end - 1)],
            )
            .await?;
        }
        Ok::<_, TracingError>(start..end)
    }
    .await;
    match result {
        Ok(range) => {
            if let Err(e) = conn.execute("COMMIT", ()).await {
                let _ = conn.execute("ROLLBACK", ()).await;
                return Err(e.into());
            }
            Ok(range)
        }
        Err(e) => {
            // Best effort: the lease's own error is the one to report.
            let _ = conn.execute("ROLLBACK", ()).await;
            Err(e)
        }
    }
}
