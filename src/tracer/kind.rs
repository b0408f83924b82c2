//! [`RecordKind`]: events and messages, the two records a tracer writes,
//! keeps in a step or outside any, and lists in a history, the same way.

use std::future::Future;
use std::pin::Pin;

use crate::error::Result;
use crate::models::{MarkovBlanketMessage, SessionTimeStep, TracingEvent};
use crate::storage::TraceStorage;
use crate::tracer::recorded::{HistorySlot, RecordedSession};
use crate::tracer::state::Pending;

/// A storage's write of one record, as [`TraceStorage`] returns it.
pub(super) type Write<'a> = Pin<Box<dyn Future<Output = Result<i64>> + Send + 'a>>;

/// What differs between an event and a message: the storage call that
/// writes it, and the lists it is kept in. `SessionTracer::record` and
/// [`RecordKind::keep`] are generic over it, so each is compiled once per
/// kind, as if written out.
pub(super) trait RecordKind: Sized + Send + Sync {
    /// Writes it through `storage` (`insert_event` or `insert_message`).
    fn write<'a>(
        &'a self,
        storage: &'a dyn TraceStorage,
        session_id: &'a str,
        timestep_id: Option<i64>,
    ) -> Write<'a>;

    /// Its kind's list in `step`.
    fn in_step(step: &mut SessionTimeStep) -> &mut Vec<Self>;

    /// Its kind's list outside any step, and its kind's history.
    fn loose_and_order(recorded: &mut RecordedSession) -> (&mut Vec<Self>, &mut Vec<HistorySlot>);

    /// Its write, kept for `end_session(true)` without `auto_save`.
    fn pending(slot: HistorySlot) -> Pending;

    /// Keeps it in the step at `step` (else among the loose ones) and
    /// notes where in its kind's history.
    #[inline]
    fn keep(self, recorded: &mut RecordedSession, step: Option<usize>) -> HistorySlot {
        let slot = match step {
            Some(pos) => {
                let list = Self::in_step(&mut recorded.trace.session_time_steps[pos]);
                list.push(self);
                HistorySlot::Step {
                    step: pos,
                    index: list.len() - 1,
                }
            }
            None => {
                let (loose, _) = Self::loose_and_order(recorded);
                loose.push(self);
                HistorySlot::Loose(loose.len() - 1)
            }
        };
        Self::loose_and_order(recorded).1.push(slot);
        slot
    }
}

/// Implements [`RecordKind`] for each kind: `Type: storage call, list in a
/// step, loose list, history, pending write;`.
macro_rules! record_kinds {
    ($($ty:ty: $insert:ident, $in_step:ident, $loose:ident, $order:ident, $pending:ident;)*) => {$(
        impl RecordKind for $ty {
            #[inline]
            fn write<'a>(
                &'a self,
                storage: &'a dyn TraceStorage,
                session_id: &'a str,
                timestep_id: Option<i64>,
            ) -> Write<'a> {
                storage.$insert(session_id, timestep_id, self)
            }

            #[inline]
            fn in_step(step: &mut SessionTimeStep) -> &mut Vec<Self> {
                &mut step.$in_step
            }

            #[inline]
            fn loose_and_order(
                recorded: &mut RecordedSession,
            ) -> (&mut Vec<Self>, &mut Vec<HistorySlot>) {
                (&mut recorded.$loose, &mut recorded.$order)
            }

            #[inline]
            fn pending(slot: HistorySlot) -> Pending {
                Pending::$pending(slot)
            }
        }
    )*};
}

record_kinds! {
    TracingEvent: insert_event, events, loose_events, event_order, Event;
    MarkovBlanketMessage: insert_message, markov_blanket_messages, loose_messages, message_order, Message;
}
