//! Reads, shared by both backends: decoding rows, `get_session`, step
//! loads and user queries.
//!
//! Decoders select a table's columns in their defined order
//! ([`Table::select_list`]) and read them by column, never by a number
//! written out here.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use libsql::{Connection, Row, Value};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::db::columns::{text_as_blob, Columns, EventCol, MessageCol, SessionCol, StepCol, Table};
use crate::db::op::text;
use crate::error::{DbError, ErrorClass, TracingError};
use crate::models::{
    BaseEventFields, EnvironmentEvent, LMCAISEvent, MarkovBlanketMessage, MessageContent,
    RuntimeEvent, SessionTimeStep, SessionTrace, TimeRecord, TracingEvent,
};

/// The first column of the first row, as an integer.
pub(crate) async fn first_i64(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
) -> Result<Option<i64>, DbError> {
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
) -> Result<Option<i64>, DbError> {
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
) -> Result<Vec<(String, i64)>, DbError> {
    let sql = format!(
        "SELECT {}, id FROM session_timesteps WHERE session_id = ?",
        text_as_blob("step_id")
    );
    let mut rows = conn.query(&sql, vec![text(session_id)]).await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((text_cell(&row, 0)?, row.get::<i64>(1)?));
    }
    Ok(out)
}

/// A value read with [`text_as_blob`], text again. Text that is not UTF-8
/// (only another program can store it) reads with U+FFFD in place of the
/// bad bytes.
fn unblob(v: Value) -> Value {
    match v {
        Value::Blob(b) => Value::Text(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }),
        other => other,
    }
}

/// Cell `i` of a row, selected with [`text_as_blob`], as text.
pub(crate) fn text_cell(row: &Row, i: i32) -> Result<String, DbError> {
    Ok(match unblob(row.get_value(i)?) {
        Value::Text(s) => s,
        Value::Integer(n) => n.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Null | Value::Blob(_) => String::new(),
    })
}

/// Cell `i` of a row of a user's query. libsql (0.9.30) unwraps the UTF-8
/// check of a local TEXT value, so text that is not UTF-8 (`CAST(x'ff' AS
/// TEXT)`) panics inside it: here that becomes the query's error, and the
/// thread that ran the query lives on.
fn user_cell(row: &Row, i: i32) -> Result<Value, DbError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| row.get_value(i))) {
        Ok(v) => Ok(v?),
        Err(_) => Err(DbError::new(
            ErrorClass::Operation,
            format!(
                "column {i} of the query's result holds text that is not UTF-8; \
                 select it as a BLOB (CAST(... AS BLOB)) to read its bytes"
            ),
        )),
    }
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
) -> Result<Vec<Json>, DbError> {
    let params: Vec<Value> = params.iter().map(json_param).collect();
    let mut rows = conn.query(sql, params).await?;
    let names: Vec<String> = (0..rows.column_count())
        .map(|i| rows.column_name(i).unwrap_or("").to_string())
        .collect();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        let mut obj = serde_json::Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            obj.insert(name.clone(), value_json(user_cell(&row, i as i32)?));
        }
        out.push(Json::Object(obj));
    }
    Ok(out)
}

/// A row selected with a table's [`Table::select_list`], read by column.
struct Cols<'r, C> {
    row: &'r Row,
    _columns: PhantomData<C>,
}

impl<'r, C: Columns> Cols<'r, C> {
    fn new(row: &'r Row) -> Self {
        Self {
            row,
            _columns: PhantomData,
        }
    }

    fn value(&self, c: C) -> Result<Value, TracingError> {
        Ok(unblob(self.row.get_value(c.index() as i32)?))
    }

    fn text(&self, c: C) -> Result<Option<String>, TracingError> {
        Ok(match self.value(c)? {
            Value::Null => None,
            Value::Text(s) => Some(s),
            Value::Integer(n) => Some(n.to_string()),
            Value::Real(f) => Some(f.to_string()),
            Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        })
    }

    fn i64(&self, c: C) -> Result<Option<i64>, TracingError> {
        Ok(match self.value(c)? {
            Value::Integer(n) => Some(n),
            Value::Real(f) => Some(f as i64),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        })
    }

    fn i32(&self, c: C) -> Result<Option<i32>, TracingError> {
        Ok(self.i64(c)?.and_then(|n| i32::try_from(n).ok()))
    }

    fn f64(&self, c: C) -> Result<Option<f64>, TracingError> {
        Ok(match self.value(c)? {
            Value::Integer(n) => Some(n as f64),
            Value::Real(f) => Some(f),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        })
    }

    fn json<T: DeserializeOwned>(&self, c: C) -> Result<Option<T>, TracingError> {
        match self.text(c)? {
            None => Ok(None),
            Some(s) => Ok(Some(serde_json::from_str(&s)?)),
        }
    }

    fn map(&self, c: C) -> Result<HashMap<String, Json>, TracingError> {
        match self.json::<Json>(c)? {
            Some(Json::Object(m)) => Ok(m.into_iter().collect()),
            _ => Ok(HashMap::new()),
        }
    }

    fn time(&self, c: C) -> Result<Option<DateTime<Utc>>, TracingError> {
        match self.text(c)? {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| TracingError::Serialization(format!("bad timestamp `{s}`: {e}"))),
        }
    }
}

/// An event row: its timestep id and the event.
fn decode_event(row: &Row) -> Result<(Option<i64>, TracingEvent), TracingError> {
    use EventCol as C;
    let r = Cols::<C>::new(row);
    let base = BaseEventFields {
        system_instance_id: r.text(C::SystemInstanceId)?.unwrap_or_default(),
        time_record: TimeRecord {
            event_time: r.f64(C::EventTime)?.unwrap_or_default(),
            message_time: r.i64(C::MessageTime)?,
        },
        metadata: r.map(C::Metadata)?,
        event_metadata: r.json(C::EventMetadata)?,
    };
    let kind = r.text(C::EventType)?.unwrap_or_default();
    let event = match kind.as_str() {
        "cais" => TracingEvent::Cais(LMCAISEvent {
            base,
            model_name: r.text(C::ModelName)?.unwrap_or_default(),
            provider: r.text(C::Provider)?,
            input_tokens: r.i32(C::InputTokens)?,
            output_tokens: r.i32(C::OutputTokens)?,
            total_tokens: r.i32(C::TotalTokens)?,
            // Rows from the original module have only the rounded cents.
            cost_usd: match r.f64(C::CostUsd)? {
                Some(c) => Some(c),
                None => r.i64(C::CostCents)?.map(|c| c as f64 / 100.0),
            },
            latency_ms: r.i32(C::LatencyMs)?,
            span_id: r.text(C::SpanId)?,
            trace_id: r.text(C::TraceId)?,
            call_records: r.json(C::CallRecords)?,
            system_state_before: r.json(C::SystemStateBefore)?,
            system_state_after: r.json(C::SystemStateAfter)?,
        }),
        "environment" => TracingEvent::Environment(EnvironmentEvent {
            base,
            reward: r.f64(C::Reward)?.unwrap_or_default(),
            terminated: r.i64(C::Terminated)?.unwrap_or_default() != 0,
            truncated: r.i64(C::Truncated)?.unwrap_or_default() != 0,
            system_state_before: r.json(C::SystemStateBefore)?,
            system_state_after: r.json(C::SystemStateAfter)?,
        }),
        "runtime" => TracingEvent::Runtime(RuntimeEvent {
            base,
            actions: r.json(C::Actions)?.unwrap_or_default(),
        }),
        other => {
            return Err(TracingError::Serialization(format!(
                "unknown event_type `{other}` in the events table"
            )))
        }
    };
    Ok((r.i64(C::TimestepId)?, event))
}

/// A message row: its timestep id and the message.
fn decode_message(row: &Row) -> Result<(Option<i64>, MarkovBlanketMessage), TracingError> {
    use MessageCol as C;
    let r = Cols::<C>::new(row);
    let content = r.text(C::Content)?;
    let content = match r.text(C::ContentKind)?.as_deref() {
        Some("json") => MessageContent {
            text: None,
            json_payload: content,
        },
        Some("both") => MessageContent {
            text: content,
            json_payload: r.text(C::JsonPayload)?,
        },
        _ => MessageContent {
            text: content,
            json_payload: None,
        },
    };
    let msg = MarkovBlanketMessage {
        content,
        message_type: r.text(C::MessageType)?.unwrap_or_default(),
        time_record: TimeRecord {
            event_time: r.f64(C::EventTime)?.unwrap_or_default(),
            message_time: r.i64(C::MessageTime)?,
        },
        metadata: r.map(C::Metadata)?,
    };
    Ok((r.i64(C::TimestepId)?, msg))
}

/// A timestep row: its id and the step, without events or messages.
fn decode_step(row: &Row) -> Result<(i64, SessionTimeStep), TracingError> {
    use StepCol as C;
    let r = Cols::<C>::new(row);
    let step = SessionTimeStep {
        step_id: r.text(C::StepId)?.unwrap_or_default(),
        step_index: r.i32(C::StepIndex)?.unwrap_or_default(),
        timestamp: r.time(C::StartedAt)?.unwrap_or_default(),
        turn_number: r.i32(C::TurnNumber)?,
        events: Vec::new(),
        markov_blanket_messages: Vec::new(),
        step_metadata: r.map(C::StepMetadata)?,
        completed_at: r.time(C::CompletedAt)?,
    };
    Ok((r.i64(C::Id)?.unwrap_or_default(), step))
}

/// Decodes an event or a message row: its timestep's id, and the record.
type Decode<T> = fn(&Row) -> Result<(Option<i64>, T), TracingError>;

/// A session's steps, read first, in step order.
struct Steps<'a> {
    conn: &'a Connection,
    session_id: &'a str,
    list: Vec<SessionTimeStep>,
    /// Each step's position in `list`, by its id.
    pos: HashMap<i64, usize>,
}

impl Steps<'_> {
    /// The session's events or messages (the rows of `table`, decoded by
    /// `decode`) in id order: its history, each record also given to its
    /// step by `keep` when the step is known.
    async fn history<T: Clone>(
        &mut self,
        table: Table,
        decode: Decode<T>,
        keep: fn(&mut SessionTimeStep, T),
    ) -> Result<Vec<T>, TracingError> {
        let mut history = Vec::new();
        let mut rows = session_rows(self.conn, table, self.session_id, "id").await?;
        while let Some(row) = rows.next().await? {
            let (ts, record) = decode(&row)?;
            if let Some(pos) = ts.and_then(|id| self.pos.get(&id)) {
                keep(&mut self.list[*pos], record.clone());
            }
            history.push(record);
        }
        Ok(history)
    }
}

/// The rows of `table` that belong to a session, in `order`.
async fn session_rows(
    conn: &Connection,
    table: Table,
    session_id: &str,
    order: &str,
) -> Result<libsql::Rows, TracingError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE session_id = ? ORDER BY {order}",
        table.select_list(),
        table.name()
    );
    Ok(conn.query(&sql, vec![text(session_id)]).await?)
}

/// Reads a whole session: steps in step order, each with its events and
/// messages, and the full histories in id order.
pub(crate) async fn get_session(
    conn: &Connection,
    session_id: &str,
) -> Result<Option<SessionTrace>, TracingError> {
    let mut rows = session_rows(conn, Table::Sessions, session_id, "session_id").await?;
    let Some(row) = rows.next().await? else {
        return Ok(None);
    };
    let session = Cols::<SessionCol>::new(&row);
    let created_at = session.time(SessionCol::CreatedAt)?.unwrap_or_default();
    let metadata = session.map(SessionCol::Metadata)?;
    drop(rows);

    let mut steps = Steps {
        conn,
        session_id,
        list: Vec::new(),
        pos: HashMap::new(),
    };
    let mut rows = session_rows(conn, Table::Timesteps, session_id, "step_index, id").await?;
    while let Some(row) = rows.next().await? {
        let (id, step) = decode_step(&row)?;
        steps.pos.insert(id, steps.list.len());
        steps.list.push(step);
    }
    drop(rows);
    let keep_event = |s: &mut SessionTimeStep, e| s.events.push(e);
    let event_history = steps
        .history(Table::Events, decode_event, keep_event)
        .await?;
    let keep_message = |s: &mut SessionTimeStep, m| s.markov_blanket_messages.push(m);
    let message_history = steps
        .history(Table::Messages, decode_message, keep_message)
        .await?;

    Ok(Some(SessionTrace {
        session_id: session_id.to_string(),
        created_at,
        session_time_steps: steps.list,
        event_history,
        markov_blanket_message_history: message_history,
        metadata,
    }))
}
