//! `trace-writer stats --db URL`: rows per table and the sessions.

use serde_json::json;
use trace_writer::TraceStorage;

use crate::db::{count, query, render, CliError, DbArgs, TABLES};
use crate::Outcome;

/// Each session with its steps, events and messages counted from the rows
/// (the stored `num_*` columns can lag behind), newest first.
const SESSIONS: &str = "
SELECT s.session_id AS session_id, s.created_at AS created_at,
       COALESCE(t.n, 0) AS steps, COALESCE(e.n, 0) AS events, COALESCE(m.n, 0) AS messages
FROM session_traces s
LEFT JOIN (SELECT session_id, COUNT(*) AS n FROM session_timesteps GROUP BY session_id) t
       ON t.session_id = s.session_id
LEFT JOIN (SELECT session_id, COUNT(*) AS n FROM events GROUP BY session_id) e
       ON e.session_id = s.session_id
LEFT JOIN (SELECT session_id, COUNT(*) AS n FROM messages GROUP BY session_id) m
       ON m.session_id = s.session_id
ORDER BY s.created_at DESC, s.session_id
LIMIT ?";

const HEADER: [&str; 5] = ["session_id", "created_at", "steps", "events", "messages"];

/// Prints the counts and up to `limit` sessions.
pub(crate) async fn run(db: &DbArgs, limit: u32) -> Result<Outcome, CliError> {
    let storage = db.open_existing().await?;
    say!("database: {}", db.shown());
    say!("");
    say!("rows per table:");
    let width = TABLES.iter().map(|t| t.len()).max().unwrap_or_default();
    let mut sessions = 0;
    for table in TABLES {
        let n = count(&storage, &format!("SELECT COUNT(*) AS n FROM {table}")).await?;
        say!("  {table:<width$}  {n}");
        if table == "session_traces" {
            sessions = n;
        }
    }
    say!("");
    let rows = query(&storage, SESSIONS, vec![json!(limit)]).await?;
    storage.close().await?;
    say!("sessions (newest first):");
    let table: Vec<[String; 5]> = rows.iter().map(|r| HEADER.map(|c| render(&r[c]))).collect();
    let mut widths = HEADER.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if table.is_empty() && sessions == 0 {
        say!("  (none)");
        return Ok(Outcome::Clean);
    }
    if !table.is_empty() {
        let [w0, w1, w2, w3, w4] = widths;
        for [id, created, steps, events, messages] in
            std::iter::once(HEADER).chain(table.iter().map(|r| r.each_ref().map(String::as_str)))
        {
            say!("  {id:<w0$}  {created:<w1$}  {steps:>w2$}  {events:>w3$}  {messages:>w4$}");
        }
    }
    let more = sessions - table.len() as i64;
    if more > 0 {
        say!("  ... and {more} more (raise --limit to list them)");
    }
    Ok(Outcome::Clean)
}
