//! [`Backend`]: what the two backends do differently, and
//! [`impl_trace_storage!`], the [`TraceStorage`] implementation written once
//! over it.
//!
//! Every write call of the trait builds its operation ([`Op`]) from its
//! arguments the same way, on the caller's thread: validated, and every
//! JSON column serialized. What differs is what happens to it: the plain
//! backend applies it at once, the writer queues it.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::db::{Op, Table};
use crate::error::Result;
use crate::models::SessionTrace;
#[cfg(doc)]
use crate::storage::TraceStorage;

/// A backend's own side of the [`TraceStorage`] calls.
pub(crate) trait Backend: Send + Sync {
    /// [`TraceStorage::initialize`].
    fn ready(&self) -> impl Future<Output = Result<()>> + Send;

    /// [`TraceStorage::close`].
    fn shut_down(&self) -> impl Future<Output = Result<()>> + Send;

    /// Applies or queues an operation that returns no id.
    fn write(&self, op: Op) -> impl Future<Output = Result<()>> + Send;

    /// Applies or queues an insert into `table`, and returns the row's id.
    fn insert(&self, op: Op, table: Table) -> impl Future<Output = Result<i64>> + Send;

    /// Called once `ensure_session` has applied or queued the session row.
    fn session_written(&self, session_id: &str) {
        let _ = session_id;
    }

    /// Called once `ensure_new_session` has applied or queued the session
    /// row of a session id made up at random: no step of it is stored.
    fn new_session_written(&self, session_id: &str) {
        self.session_written(session_id);
    }

    /// [`TraceStorage::ensure_session`], or with `made_up`
    /// [`TraceStorage::ensure_new_session`]: the session row applied or
    /// queued, then the backend told which it was.
    fn session(
        &self,
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Json,
        made_up: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.write(Op::session(session_id, created_at, metadata)?)
                .await?;
            if made_up {
                self.new_session_written(session_id);
            } else {
                self.session_written(session_id);
            }
            Ok(())
        }
    }

    /// [`TraceStorage::ensure_timestep`]: the id of the step `step_id` of
    /// the session if it exists, else `op` (its insert) applied or queued.
    fn ensure_step(
        &self,
        op: Op,
        session_id: &str,
        step_id: &str,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// [`TraceStorage::get_session`].
    fn read_session(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<Option<SessionTrace>>> + Send;

    /// [`TraceStorage::delete_session`].
    fn remove_session(&self, session_id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// [`TraceStorage::query`].
    fn run_query(
        &self,
        sql: &str,
        params: Vec<Json>,
    ) -> impl Future<Output = Result<Vec<Json>>> + Send;
}

/// Implements [`TraceStorage`] for a [`Backend`]: each call builds its
/// operation and hands it to the backend.
///
/// A backend may document four of the calls in its own words, in this order:
/// `impl_trace_storage!(Type { initialize: /// ... close: query:
/// update_session_counts: })`; `impl_trace_storage!(Type)` keeps the trait's
/// documentation.
macro_rules! impl_trace_storage {
    ($backend:ty) => {
        $crate::storage::backend::impl_trace_storage!($backend {
            initialize: close: query: update_session_counts:
        });
    };
    ($backend:ty {
        initialize: $(#[$initialize:meta])*
        close: $(#[$close:meta])*
        query: $(#[$query:meta])*
        update_session_counts: $(#[$counts:meta])*
    }) => {
        // The four inserts differ only in their arguments, their table and
        // the row source (`db::op::RowSource`) made of their arguments:
        // `call(arguments) => table: row source;`.
        $crate::storage::backend::impl_trace_storage!(@impl $backend {
            initialize: $(#[$initialize])*
            close: $(#[$close])*
            query: $(#[$query])*
            update_session_counts: $(#[$counts])*
        } inserts {
            insert_event(timestep_db_id: Option<i64>, event: &$crate::models::TracingEvent)
                => Events: $crate::db::op::InStep { timestep_id: timestep_db_id, record: event };
            insert_message(timestep_db_id: Option<i64>, msg: &$crate::models::MarkovBlanketMessage)
                => Messages: $crate::db::op::InStep { timestep_id: timestep_db_id, record: msg };
            insert_outcome_reward(reward: &$crate::models::OutcomeReward)
                => OutcomeRewards: reward;
            insert_event_reward(
                event_id: i64,
                message_id: Option<i64>,
                turn_number: Option<i32>,
                reward: &$crate::models::EventReward
            ) => EventRewards: $crate::db::op::RewardFor { event_id, message_id, turn_number, reward };
        });
    };
    (@impl $backend:ty {
        initialize: $(#[$initialize:meta])*
        close: $(#[$close:meta])*
        query: $(#[$query:meta])*
        update_session_counts: $(#[$counts:meta])*
    } inserts {
        $($insert:ident($($arg:ident: $ty:ty),*) => $table:ident: $row:expr;)*
    }) => {
        #[async_trait::async_trait]
        impl $crate::storage::TraceStorage for $backend {
            $(#[$initialize])*
            async fn initialize(&self) -> ::std::result::Result<(), $crate::error::TracingError> {
                $crate::storage::backend::Backend::ready(self).await
            }

            $(#[$close])*
            async fn close(&self) -> ::std::result::Result<(), $crate::error::TracingError> {
                $crate::storage::backend::Backend::shut_down(self).await
            }

            async fn ensure_session(
                &self,
                session_id: &str,
                created_at: chrono::DateTime<chrono::Utc>,
                metadata: &serde_json::Value,
            ) -> ::std::result::Result<(), $crate::error::TracingError> {
                $crate::storage::backend::Backend::session(self, session_id, created_at, metadata, false).await
            }

            async fn ensure_new_session(
                &self,
                session_id: &str,
                created_at: chrono::DateTime<chrono::Utc>,
                metadata: &serde_json::Value,
            ) -> ::std::result::Result<(), $crate::error::TracingError> {
                $crate::storage::backend::Backend::session(self, session_id, created_at, metadata, true).await
            }

            async fn get_session(&self, session_id: &str) -> ::std::result::Result<Option<$crate::models::SessionTrace>, $crate::error::TracingError> {
                $crate::storage::backend::Backend::read_session(self, session_id).await
            }

            async fn delete_session(&self, session_id: &str) -> ::std::result::Result<bool, $crate::error::TracingError> {
                $crate::storage::backend::Backend::remove_session(self, session_id).await
            }

            async fn ensure_timestep(
                &self,
                session_id: &str,
                step: &$crate::models::SessionTimeStep,
            ) -> ::std::result::Result<i64, $crate::error::TracingError> {
                let op = $crate::db::Op::row(None, session_id, step)?;
                $crate::storage::backend::Backend::ensure_step(self, op, session_id, &step.step_id).await
            }

            async fn update_timestep(
                &self,
                session_id: &str,
                step_id: &str,
                completed_at: Option<chrono::DateTime<chrono::Utc>>,
            ) -> ::std::result::Result<(), $crate::error::TracingError> {
                let op = $crate::db::Op::update_timestep(session_id, step_id, completed_at)?;
                $crate::storage::backend::Backend::write(self, op).await
            }

            $(
                async fn $insert(
                    &self,
                    session_id: &str,
                    $($arg: $ty),*
                ) -> ::std::result::Result<i64, $crate::error::TracingError> {
                    let op = $crate::db::Op::row(None, session_id, $row)?;
                    $crate::storage::backend::Backend::insert(self, op, $crate::db::Table::$table).await
                }
            )*

            $(#[$query])*
            async fn query(&self, sql: &str, params: Vec<serde_json::Value>) -> ::std::result::Result<Vec<serde_json::Value>, $crate::error::TracingError> {
                $crate::storage::backend::Backend::run_query(self, sql, params).await
            }

            $(#[$counts])*
            async fn update_session_counts(&self, session_id: &str) -> ::std::result::Result<(), $crate::error::TracingError> {
                $crate::storage::backend::Backend::write(self, $crate::db::Op::update_counts(session_id)?).await
            }
        }
    };
}

pub(crate) use impl_trace_storage;
