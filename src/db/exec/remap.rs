//! Steps whose row was made elsewhere: the records this writer filed under
//! its own id for such a step are written under the real row's id.

use std::collections::HashMap;

use libsql::Value;

use crate::db::columns::Table;
use crate::db::hrana::Arg;

/// Step ids handed out by this writer whose `(session_id, step_id)` row
/// turned out to exist already, created by someone else (another writer, a
/// plain backend, another process): the id given out, and the real row's
/// id. Events and messages that name the first are written with the second.
/// It only grows on such a conflict, a rare event.
#[derive(Debug, Default)]
pub(crate) struct StepRemap {
    real: HashMap<i64, i64>,
    /// Entries learnt so far: a request encoded before the last one was
    /// learnt files some records under the wrong step.
    learnt: u64,
}

impl StepRemap {
    /// Files what names step id `ours` under `real`, the id of the step's
    /// row created elsewhere.
    pub(crate) fn learn(&mut self, ours: i64, real: i64) {
        tracing::debug!(target: "trace_writer", ours, real,
            "step created elsewhere; filing under the existing row");
        self.real.insert(ours, real);
        self.learnt += 1;
    }

    /// How many entries were learnt so far.
    pub(crate) fn learnt(&self) -> u64 {
        self.learnt
    }

    /// Writes a row of `table`, bound as values, under its step's real row.
    pub(crate) fn values(&self, table: Table, row: &mut [Value]) {
        self.remap(table, row, |v| v, Value::Integer);
    }

    /// Writes a row of `table`, bound as Hrana arguments, under its step's
    /// real row.
    pub(crate) fn args(&self, table: Table, row: &mut [Arg<'_>]) {
        self.remap(table, row, |a| &*a.0, |id| Arg::owned(Value::Integer(id)));
    }

    /// The one remap, over a row in either form.
    fn remap<T>(
        &self,
        table: Table,
        row: &mut [T],
        value: impl Fn(&T) -> &Value,
        make: impl Fn(i64) -> T,
    ) {
        if self.real.is_empty() {
            return;
        }
        let Some(slot) = table.timestep_column().and_then(|i| row.get_mut(i)) else {
            return;
        };
        if let Value::Integer(id) = value(slot) {
            if let Some(&real) = self.real.get(id) {
                *slot = make(real);
            }
        }
    }
}
