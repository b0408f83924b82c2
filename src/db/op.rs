//! Operations: rows validated and serialized by the producer, ready to bind.
//!
//! Every row this crate writes is first an [`Op`]. Its constructors check
//! the input (finite numbers, non-empty ids) and serialize every JSON column
//! on the caller's thread, so the one thread that owns the connection only
//! binds values.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use libsql::Value;
use serde::Serialize;
use serde_json::Value as Json;

use crate::db::columns::{
    Columns, EventCol, EventRewardCol, KeyedColumns, MessageCol, OutcomeCol, RowValues, SessionCol,
    StepCol, Table,
};
use crate::error::TracingError;
use crate::models::{
    EventReward, MarkovBlanketMessage, OutcomeReward, SessionTimeStep, TracingEvent,
};

/// `UPDATE` of a timestep's `completed_at`; binds `completed_at`,
/// `session_id`, `step_id`.
pub(crate) const UPDATE_TIMESTEP_SQL: &str =
    "UPDATE session_timesteps SET completed_at = ? WHERE session_id = ? AND step_id = ?";

/// Recomputes a session's three counts; binds `session_id`.
pub(crate) const UPDATE_COUNTS_SQL: &str = "UPDATE session_traces SET \
     num_timesteps = (SELECT COUNT(*) FROM session_timesteps WHERE session_id = ?1), \
     num_events = (SELECT COUNT(*) FROM events WHERE session_id = ?1), \
     num_messages = (SELECT COUNT(*) FROM messages WHERE session_id = ?1) \
     WHERE session_id = ?1";

/// One write, with every value already serialized for binding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// An insert, values in the table's column order. For tables with ids,
    /// the id is `Null` to let AUTOINCREMENT choose it.
    Insert { table: Table, values: Vec<Value> },
    /// `completed_at`, `session_id`, `step_id`, as [`UPDATE_TIMESTEP_SQL`] binds them.
    UpdateTimestep { values: Vec<Value> },
    /// Recomputes the three counts of a session.
    UpdateSessionCounts { session_id: String },
}

pub(crate) fn text(s: &str) -> Value {
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

fn opt_time(t: Option<&DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, time_text)
}

fn json_text<T: Serialize + ?Sized>(v: &T) -> Result<Value, TracingError> {
    Ok(Value::Text(crate::db::json::to_string(v)?))
}

fn opt_json<T: Serialize>(v: Option<&T>) -> Result<Value, TracingError> {
    v.map_or(Ok(Value::Null), json_text)
}

/// A map's entries in key order, serialized as a map: the stored text is
/// the same for equal maps, whatever their hash order.
struct Sorted<'a>(Vec<(&'a String, &'a Json)>);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().copied())
    }
}

fn map_json(m: &HashMap<String, Json>) -> Result<Value, TracingError> {
    let mut sorted: Vec<(&String, &Json)> = m.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    json_text(&Sorted(sorted))
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

/// What a row of a table with ids is made from: a step, an event or a
/// message with its step, an outcome reward, or an event reward with what
/// it rewards. [`Op::row`] sets the `id` and `session_id` every such row
/// opens with; `fill` checks and sets the rest.
pub(crate) trait RowSource {
    /// The table's columns.
    type Col: KeyedColumns;

    /// Checks the record and sets its columns after `id` and `session_id`.
    fn fill(&self, row: &mut RowValues<Self::Col>) -> Result<(), TracingError>;
}

/// An event or a message, with the step it belongs to.
pub(crate) struct InStep<'a, T> {
    pub(crate) timestep_id: Option<i64>,
    pub(crate) record: &'a T,
}

/// An event reward, with the event (and message, and turn) it rewards.
pub(crate) struct RewardFor<'a> {
    pub(crate) event_id: i64,
    pub(crate) message_id: Option<i64>,
    pub(crate) turn_number: Option<i32>,
    pub(crate) reward: &'a EventReward,
}

impl RowSource for &SessionTimeStep {
    type Col = StepCol;

    fn fill(&self, row: &mut RowValues<StepCol>) -> Result<(), TracingError> {
        use StepCol as C;
        let step = *self;
        non_empty("step_id", &step.step_id)?;
        row.set(C::StepId, text(&step.step_id))
            .set(C::StepIndex, Value::Integer(step.step_index.into()))
            .set(C::TurnNumber, opt_int(step.turn_number.map(i64::from)))
            .set(C::StartedAt, time_text(&step.timestamp))
            .set(C::CompletedAt, opt_time(step.completed_at.as_ref()))
            .set(C::StepMetadata, map_json(&step.step_metadata)?);
        Ok(())
    }
}

/// The system state before and after, which CAIS and environment events
/// both carry.
// Always inlined: out of line it cost each event about 25 instructions
// more (callgrind).
#[inline(always)]
fn system_states(
    row: &mut RowValues<EventCol>,
    before: &Option<Json>,
    after: &Option<Json>,
) -> Result<(), TracingError> {
    row.set(EventCol::SystemStateBefore, opt_json(before.as_ref())?)
        .set(EventCol::SystemStateAfter, opt_json(after.as_ref())?);
    Ok(())
}

impl RowSource for InStep<'_, TracingEvent> {
    type Col = EventCol;

    fn fill(&self, row: &mut RowValues<EventCol>) -> Result<(), TracingError> {
        use EventCol as C;
        let event = self.record;
        let base = event.base();
        let time = finite("event_time", base.time_record.event_time)?;
        row.set(C::TimestepId, opt_int(self.timestep_id))
            .set(C::EventType, text(event.event_type().as_str()))
            .set(C::SystemInstanceId, text(&base.system_instance_id))
            .set(C::EventTime, Value::Real(time))
            .set(C::MessageTime, opt_int(base.time_record.message_time))
            .set(C::Metadata, map_json(&base.metadata)?)
            .set(C::EventMetadata, opt_json(base.event_metadata.as_ref())?);
        match event {
            TracingEvent::Cais(e) => {
                row.set(C::ModelName, text(&e.model_name))
                    .set(C::Provider, opt_text(e.provider.as_deref()))
                    .set(C::InputTokens, opt_int(e.input_tokens.map(i64::from)))
                    .set(C::OutputTokens, opt_int(e.output_tokens.map(i64::from)))
                    .set(C::TotalTokens, opt_int(e.total_tokens.map(i64::from)))
                    .set(C::LatencyMs, opt_int(e.latency_ms.map(i64::from)))
                    .set(C::SpanId, opt_text(e.span_id.as_deref()))
                    .set(C::TraceId, opt_text(e.trace_id.as_deref()));
                system_states(row, &e.system_state_before, &e.system_state_after)?;
                if let Some(cost) = e.cost_usd {
                    let cost = finite("cost_usd", cost)?;
                    // The original module's column keeps rounded cents; the
                    // exact value goes beside it.
                    row.set(C::CostCents, Value::Integer((cost * 100.0).round() as i64))
                        .set(C::CostUsd, Value::Real(cost));
                }
                if let Some(records) = &e.call_records {
                    for r in records {
                        if let Some(cost) = r.usage.as_ref().and_then(|u| u.cost_usd) {
                            finite("call record cost_usd", cost)?;
                        }
                    }
                    row.set(C::CallRecords, json_text(records)?);
                }
            }
            TracingEvent::Environment(e) => {
                row.set(C::Reward, Value::Real(finite("reward", e.reward)?))
                    .set(C::Terminated, Value::Integer(e.terminated.into()))
                    .set(C::Truncated, Value::Integer(e.truncated.into()));
                system_states(row, &e.system_state_before, &e.system_state_after)?;
            }
            TracingEvent::Runtime(e) => {
                row.set(C::Actions, json_text(&e.actions)?);
            }
        }
        Ok(())
    }
}

impl RowSource for InStep<'_, MarkovBlanketMessage> {
    type Col = MessageCol;

    fn fill(&self, row: &mut RowValues<MessageCol>) -> Result<(), TracingError> {
        use MessageCol as C;
        let msg = self.record;
        let time = finite("event_time", msg.time_record.event_time)?;
        // `content` keeps the original meaning (text, else JSON); the kind and
        // a second column make the read lossless.
        let (content, kind, payload) = match (&msg.content.text, &msg.content.json_payload) {
            (Some(t), None) => (text(t), Value::Null, Value::Null),
            (None, Some(j)) => (text(j), text("json"), Value::Null),
            (Some(t), Some(j)) => (text(t), text("both"), text(j)),
            (None, None) => (Value::Null, Value::Null, Value::Null),
        };
        row.set(C::TimestepId, opt_int(self.timestep_id))
            .set(C::MessageType, text(&msg.message_type))
            .set(C::Content, content)
            .set(C::EventTime, Value::Real(time))
            .set(C::MessageTime, opt_int(msg.time_record.message_time))
            .set(C::Metadata, map_json(&msg.metadata)?)
            .set(C::ContentKind, kind)
            .set(C::JsonPayload, payload);
        Ok(())
    }
}

impl RowSource for &OutcomeReward {
    type Col = OutcomeCol;

    fn fill(&self, row: &mut RowValues<OutcomeCol>) -> Result<(), TracingError> {
        use OutcomeCol as C;
        let reward = *self;
        let total = finite("total_reward", reward.total_reward)?;
        row.set(C::ObjectiveKey, text(&reward.objective_key))
            .set(C::TotalReward, Value::Real(total))
            .set(
                C::AchievementsCount,
                Value::Integer(reward.achievements_count.into()),
            )
            .set(C::TotalSteps, Value::Integer(reward.total_steps.into()))
            .set(C::CreatedAt, time_text(&Utc::now()))
            .set(C::RewardMetadata, map_json(&reward.reward_metadata)?)
            .set(C::Annotation, opt_json(reward.annotation.as_ref())?);
        Ok(())
    }
}

impl RowSource for RewardFor<'_> {
    type Col = EventRewardCol;

    fn fill(&self, row: &mut RowValues<EventRewardCol>) -> Result<(), TracingError> {
        use EventRewardCol as C;
        let reward = self.reward;
        let value = finite("reward_value", reward.reward_value)?;
        row.set(C::EventId, Value::Integer(self.event_id))
            .set(C::MessageId, opt_int(self.message_id))
            .set(C::TurnNumber, opt_int(self.turn_number.map(i64::from)))
            .set(C::ObjectiveKey, text(&reward.objective_key))
            .set(C::RewardValue, Value::Real(value))
            .set(C::RewardType, opt_text(reward.reward_type.as_deref()))
            .set(C::Key, opt_text(reward.key.as_deref()))
            .set(C::Annotation, opt_json(reward.annotation.as_ref())?)
            .set(C::Source, opt_text(reward.source.as_deref()))
            .set(C::CreatedAt, time_text(&Utc::now()));
        Ok(())
    }
}

impl Op {
    fn insert<C: Columns>(table: Table, row: RowValues<C>) -> Op {
        Op::Insert {
            table,
            values: row.into_values(),
        }
    }

    /// The session row.
    pub(crate) fn session(
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Json,
    ) -> Result<Op, TracingError> {
        use SessionCol as C;
        non_empty("session_id", session_id)?;
        let mut row = RowValues::new();
        row.set(C::SessionId, text(session_id))
            .set(C::CreatedAt, time_text(&created_at))
            .set(C::Metadata, json_text(metadata)?);
        Ok(Op::insert(Table::Sessions, row))
    }

    /// The row of `source` in its table, with its `id` (`None` for
    /// AUTOINCREMENT) and its non-empty `session_id`.
    // Inlined into each insert call: out of line, with each `fill` inlined
    // in it instead, building a row cost about 5% more instructions
    // (callgrind).
    #[inline]
    pub(crate) fn row<S: RowSource>(
        id: Option<i64>,
        session_id: &str,
        source: S,
    ) -> Result<Op, TracingError> {
        non_empty("session_id", session_id)?;
        let mut row = RowValues::new();
        row.set(S::Col::ID, opt_int(id))
            .set(S::Col::SESSION_ID, text(session_id));
        source.fill(&mut row)?;
        Ok(Op::insert(S::Col::TABLE, row))
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
                opt_time(completed_at.as_ref()),
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

    /// Gives an insert its id (a no-op for other operations).
    pub(crate) fn set_id(&mut self, id: i64) {
        if let Op::Insert { table, values } = self {
            if let Some(slot) = table.id_column().and_then(|i| values.get_mut(i)) {
                *slot = Value::Integer(id);
            }
        }
    }

    /// The id of an insert, if it has one already.
    pub(crate) fn id(&self) -> Option<i64> {
        match self {
            Op::Insert { table, values } => match table.id_column().and_then(|i| values.get(i)) {
                Some(Value::Integer(id)) => Some(*id),
                _ => None,
            },
            _ => None,
        }
    }

    /// `(id, session_id, step_id)` of a timestep insert with its id set.
    pub(crate) fn timestep_key(&self) -> Option<(i64, &str, &str)> {
        let (sid, step) = self.step_names()?;
        match self {
            Op::Insert { values, .. } => match values.get(StepCol::Id.index()) {
                Some(Value::Integer(id)) => Some((*id, sid, step)),
                _ => None,
            },
            _ => None,
        }
    }

    /// `(session_id, step_id)` of the step a timestep insert (with its id
    /// set or not) or an update of a step names.
    pub(crate) fn step_names(&self) -> Option<(&str, &str)> {
        let (sid, step) = match self {
            Op::Insert {
                table: Table::Timesteps,
                values,
            } => (
                values.get(StepCol::SessionId.index()),
                values.get(StepCol::StepId.index()),
            ),
            // As `UPDATE_TIMESTEP_SQL` binds them: completed_at, then these.
            Op::UpdateTimestep { values } => (values.get(1), values.get(2)),
            _ => return None,
        };
        match (sid, step) {
            (Some(Value::Text(sid)), Some(Value::Text(step))) => Some((sid, step)),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_text_is_in_key_order_whatever_the_hash_order() {
        let m: HashMap<String, Json> = (0..40)
            .rev()
            .map(|i| (format!("k{i:02}"), Json::from(i)))
            .collect();
        let Value::Text(text) = map_json(&m).expect("json") else {
            panic!("not text");
        };
        let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
        assert_eq!(text, serde_json::to_string(&sorted).expect("serde_json"));
    }
}
