//! The tables this crate writes, and each table's columns, defined once.
//!
//! A table's column enum gives each column its position: the `INSERT` SQL
//! (single and multi-row), the order values are bound in ([`Op`]'s
//! constructors set values by column) and the decoders (which select every
//! column in this order and read them by column) all derive from it. The DDL
//! in [`crate::schema`] creates these columns; a unit test checks that every
//! one exists.
//!
//! [`Op`]: crate::db::Op

use libsql::Value;

/// A table's columns: an enum whose variants are its columns, in order.
pub(crate) trait Columns: Copy {
    /// Column names, in bind and select order.
    const NAMES: &'static [&'static str];

    /// This column's position among [`Columns::NAMES`].
    fn index(self) -> usize;
}

/// Defines a column enum: `Variant = "column_name"`, in bind order.
macro_rules! columns {
    ($(#[$doc:meta])* $name:ident { $($var:ident = $col:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub(crate) enum $name {
            $(
                #[allow(missing_docs)]
                $var,
            )+
        }

        impl Columns for $name {
            const NAMES: &'static [&'static str] = &[$($col,)+];

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

columns! {
    /// `session_traces`, as bound by an insert (the counts keep their default).
    SessionCol {
        SessionId = "session_id",
        CreatedAt = "created_at",
        Metadata = "metadata",
    }
}

columns! {
    /// `session_timesteps`.
    StepCol {
        Id = "id",
        SessionId = "session_id",
        StepId = "step_id",
        StepIndex = "step_index",
        TurnNumber = "turn_number",
        StartedAt = "started_at",
        CompletedAt = "completed_at",
        StepMetadata = "step_metadata",
    }
}

columns! {
    /// `events`: one wide table for the three event kinds.
    EventCol {
        Id = "id",
        SessionId = "session_id",
        TimestepId = "timestep_id",
        EventType = "event_type",
        SystemInstanceId = "system_instance_id",
        EventTime = "event_time",
        MessageTime = "message_time",
        ModelName = "model_name",
        Provider = "provider",
        InputTokens = "input_tokens",
        OutputTokens = "output_tokens",
        TotalTokens = "total_tokens",
        CostCents = "cost_cents",
        LatencyMs = "latency_ms",
        CallRecords = "call_records",
        Reward = "reward",
        Terminated = "terminated",
        Truncated = "truncated",
        SystemStateBefore = "system_state_before",
        SystemStateAfter = "system_state_after",
        Metadata = "metadata",
        EventMetadata = "event_metadata",
        CostUsd = "cost_usd",
        SpanId = "span_id",
        TraceId = "trace_id",
        Actions = "actions",
    }
}

columns! {
    /// `messages`.
    MessageCol {
        Id = "id",
        SessionId = "session_id",
        TimestepId = "timestep_id",
        MessageType = "message_type",
        Content = "content",
        EventTime = "event_time",
        MessageTime = "message_time",
        Metadata = "metadata",
        ContentKind = "content_kind",
        JsonPayload = "json_payload",
    }
}

columns! {
    /// `outcome_rewards`.
    OutcomeCol {
        Id = "id",
        SessionId = "session_id",
        ObjectiveKey = "objective_key",
        TotalReward = "total_reward",
        AchievementsCount = "achievements_count",
        TotalSteps = "total_steps",
        CreatedAt = "created_at",
        RewardMetadata = "reward_metadata",
        Annotation = "annotation",
    }
}

columns! {
    /// `event_rewards`.
    EventRewardCol {
        Id = "id",
        EventId = "event_id",
        SessionId = "session_id",
        MessageId = "message_id",
        TurnNumber = "turn_number",
        ObjectiveKey = "objective_key",
        RewardValue = "reward_value",
        RewardType = "reward_type",
        Key = "key",
        Annotation = "annotation",
        Source = "source",
        CreatedAt = "created_at",
    }
}

/// The columns of a table with ids: the table, and the `id` and
/// `session_id` columns every row of it opens with.
pub(crate) trait KeyedColumns: Columns {
    const TABLE: Table;
    const ID: Self;
    const SESSION_ID: Self;
}

/// [`KeyedColumns`] for each table with ids: `Columns: Table;`.
macro_rules! keyed_columns {
    ($($col:ident: $table:ident;)*) => {$(
        impl KeyedColumns for $col {
            const TABLE: Table = Table::$table;
            const ID: Self = $col::Id;
            const SESSION_ID: Self = $col::SessionId;
        }
    )*};
}

keyed_columns! {
    StepCol: Timesteps;
    EventCol: Events;
    MessageCol: Messages;
    OutcomeCol: OutcomeRewards;
    EventRewardCol: EventRewards;
}

/// The values of one row, set by column.
#[derive(Debug)]
pub(crate) struct RowValues<C> {
    values: Vec<Value>,
    _columns: std::marker::PhantomData<C>,
}

impl<C: Columns> RowValues<C> {
    /// A row of `NULL`s.
    pub(crate) fn new() -> Self {
        Self {
            values: vec![Value::Null; C::NAMES.len()],
            _columns: std::marker::PhantomData,
        }
    }

    pub(crate) fn set(&mut self, col: C, value: Value) -> &mut Self {
        self.values[col.index()] = value;
        self
    }

    pub(crate) fn into_values(self) -> Vec<Value> {
        self.values
    }
}

/// A column's value for reading, with text as a BLOB of its bytes.
///
/// libsql (0.9.30) reads a local TEXT value as a C string and unwraps its
/// UTF-8 check: text with a NUL would come back cut at the NUL, and text
/// that is not UTF-8 would panic. A BLOB comes back whole, with its length;
/// [`crate::db::read`] turns it back into text. Other values pass as they
/// are: a REAL cast to text would lose digits.
pub(crate) fn text_as_blob(column: &str) -> String {
    format!("CASE WHEN typeof({column}) = 'text' THEN CAST({column} AS BLOB) ELSE {column} END")
}

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
    /// Every table, in the order rows may reference each other.
    pub(crate) const ALL: [Table; 6] = [
        Table::Sessions,
        Table::Timesteps,
        Table::Events,
        Table::Messages,
        Table::OutcomeRewards,
        Table::EventRewards,
    ];

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

    /// The table a name names.
    pub(crate) fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Index into [`Table::WITH_IDS`], for tables that have ids.
    pub(crate) fn id_slot(self) -> Option<usize> {
        Table::WITH_IDS.iter().position(|t| *t == self)
    }

    /// The columns bound by an insert, in bind order.
    pub(crate) fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Sessions => SessionCol::NAMES,
            Table::Timesteps => StepCol::NAMES,
            Table::Events => EventCol::NAMES,
            Table::Messages => MessageCol::NAMES,
            Table::OutcomeRewards => OutcomeCol::NAMES,
            Table::EventRewards => EventRewardCol::NAMES,
        }
    }

    /// Position of the `id` column, for tables that have ids.
    pub(crate) fn id_column(self) -> Option<usize> {
        match self {
            Table::Sessions => None,
            Table::Timesteps => Some(StepCol::Id.index()),
            Table::Events => Some(EventCol::Id.index()),
            Table::Messages => Some(MessageCol::Id.index()),
            Table::OutcomeRewards => Some(OutcomeCol::Id.index()),
            Table::EventRewards => Some(EventRewardCol::Id.index()),
        }
    }

    /// Position of `timestep_id`, for tables whose rows belong to a step.
    pub(crate) fn timestep_column(self) -> Option<usize> {
        match self {
            Table::Events => Some(EventCol::TimestepId.index()),
            Table::Messages => Some(MessageCol::TimestepId.index()),
            _ => None,
        }
    }

    /// Position of `session_id` among the bound values.
    pub(crate) fn session_column(self) -> usize {
        match self {
            Table::Sessions => SessionCol::SessionId.index(),
            Table::Timesteps => StepCol::SessionId.index(),
            Table::Events => EventCol::SessionId.index(),
            Table::Messages => MessageCol::SessionId.index(),
            Table::OutcomeRewards => OutcomeCol::SessionId.index(),
            Table::EventRewards => EventRewardCol::SessionId.index(),
        }
    }

    fn on_conflict(self) -> &'static str {
        match self {
            Table::Sessions => " ON CONFLICT(session_id) DO NOTHING",
            Table::Timesteps => " ON CONFLICT(session_id, step_id) DO NOTHING",
            _ => "",
        }
    }

    /// The column list, comma-separated, for `SELECT`s that decode by
    /// column: text comes as a BLOB of its bytes ([`text_as_blob`]).
    pub(crate) fn select_list(self) -> String {
        let cols: Vec<String> = self.columns().iter().map(|c| text_as_blob(c)).collect();
        cols.join(", ")
    }

    /// `INSERT` of any number of rows bound as one JSON text, an array with
    /// one array per row holding its values in column order: SQLite's
    /// `json_each` walks the rows and `->>` gives each value back as SQL
    /// (see `encode.rs` for which values go this way). `WHERE true` keeps
    /// `ON CONFLICT` from being read as a join's constraint.
    pub(crate) fn insert_json_sql(self) -> String {
        let picks: Vec<String> = (0..self.columns().len())
            .map(|k| format!("value ->> {k}"))
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM json_each(?) WHERE true{}",
            self.name(),
            self.columns().join(", "),
            picks.join(", "),
            self.on_conflict()
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_exists_in_the_schema() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (_db, conn) = crate::schema::memory_with_schema().await;
            for table in Table::ALL {
                let sql = format!(
                    "SELECT {} FROM {} LIMIT 0",
                    table.select_list(),
                    table.name()
                );
                conn.query(&sql, ()).await.expect(&sql);
                let id = table.id_column().map(|i| table.columns()[i]);
                assert!(id.is_none() || id == Some("id"), "{table:?}");
                assert_eq!(table.columns()[table.session_column()], "session_id");
            }
        });
    }

    #[test]
    fn insert_sql_has_one_placeholder_per_column() {
        for table in Table::ALL {
            let sql = table.insert_sql(3, false);
            assert_eq!(sql.matches('?').count(), 3 * table.columns().len());
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
    }
}
