//! `trace-writer check --db URL`: integrity and dangling references.

use trace_writer::{LibsqlTraceStorage, TraceStorage};

use crate::db::{count, query, render, CliError, DbArgs};
use crate::Outcome;

/// How many example rows each check prints.
const EXAMPLES: usize = 10;

/// One search for rows that name something missing. The row under test is
/// always aliased `x`.
struct Dangling {
    /// What the rows found are, as printed.
    what: String,
    /// The `FROM` clause.
    from: String,
    /// The `WHERE` clause that picks the dangling rows.
    cond: String,
    /// An SQL text expression that says what is missing, for the examples.
    detail: String,
}

/// Every reference the schema implies but does not enforce.
fn checks() -> Vec<Dangling> {
    let mut out = Vec::new();
    for table in ["events", "messages"] {
        out.push(Dangling {
            what: format!("{table} whose timestep_id names no step"),
            from: format!("{table} x"),
            cond: "x.timestep_id IS NOT NULL AND NOT EXISTS \
                   (SELECT 1 FROM session_timesteps t WHERE t.id = x.timestep_id)"
                .into(),
            detail: "'timestep_id ' || x.timestep_id".into(),
        });
        out.push(Dangling {
            what: format!("{table} whose step belongs to another session"),
            from: format!("{table} x JOIN session_timesteps t ON t.id = x.timestep_id"),
            cond: "t.session_id IS NOT x.session_id".into(),
            detail: "'timestep_id ' || x.timestep_id || ' is a step of session ' \
                     || quote(t.session_id) || ', the row is in ' || quote(x.session_id)"
                .into(),
        });
    }
    for table in [
        "events",
        "messages",
        "session_timesteps",
        "outcome_rewards",
        "event_rewards",
    ] {
        out.push(Dangling {
            what: format!("{table} whose session_id names no session"),
            from: format!("{table} x"),
            cond: "NOT EXISTS (SELECT 1 FROM session_traces s WHERE s.session_id = x.session_id)"
                .into(),
            detail: "'session_id ' || quote(x.session_id)".into(),
        });
    }
    out.push(Dangling {
        what: "event_rewards whose event_id names no event".into(),
        from: "event_rewards x".into(),
        // The API always gives an event id, so NULL is as dangling as a
        // missing row.
        cond: "x.event_id IS NULL OR NOT EXISTS (SELECT 1 FROM events e WHERE e.id = x.event_id)"
            .into(),
        detail: "'event_id ' || quote(x.event_id)".into(),
    });
    out.push(Dangling {
        what: "event_rewards whose message_id names no message".into(),
        from: "event_rewards x".into(),
        cond: "x.message_id IS NOT NULL AND NOT EXISTS \
               (SELECT 1 FROM messages m WHERE m.id = x.message_id)"
            .into(),
        detail: "'message_id ' || x.message_id".into(),
    });
    out
}

/// Runs every check, prints a summary of each, and says whether all passed.
pub(crate) async fn run(db: &DbArgs) -> Result<Outcome, CliError> {
    let storage = db.open_existing().await?;
    say!("checking {}", db.shown());
    let damage = integrity(&storage).await?;
    let mut problems = damage;
    for check in checks() {
        match dangling(&storage, &check).await {
            Ok(n) => problems += n,
            // A damaged file can fail a query; that check is a finding then,
            // and the others may still run.
            Err(e) if damage > 0 => {
                say!("{}: not checked: {}", check.what, e.message());
                problems += 1;
            }
            Err(e) => return Err(e),
        }
    }
    storage.close().await?;
    if problems == 0 {
        say!("result: ok");
        Ok(Outcome::Clean)
    } else {
        say!("result: {problems} problem(s) found");
        Ok(Outcome::Problems)
    }
}

/// `PRAGMA integrity_check`; returns how many problems it reported.
async fn integrity(storage: &LibsqlTraceStorage) -> Result<usize, CliError> {
    let rows = query(storage, "PRAGMA integrity_check", vec![]).await?;
    // One row per problem, or one row of several lines, depending on the
    // build; the `*** in database main ***` heading is not a problem.
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|r| r.as_object()?.values().next().map(render))
        .flat_map(|v| v.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.trim().is_empty() && !l.starts_with("***"))
        .collect();
    if lines == ["ok"] {
        say!("integrity_check: ok");
        return Ok(0);
    }
    // No answer at all is as suspect as a bad one.
    let n = lines.len().max(1);
    // SQLite stops counting at 100 by default.
    let capped = if n >= 100 { " (it stops at 100)" } else { "" };
    say!("integrity_check: {n} problem(s){capped}");
    for line in lines.iter().take(EXAMPLES) {
        say!("    {line}");
    }
    if n > EXAMPLES {
        say!("    ... and {} more", n - EXAMPLES);
    }
    Ok(n)
}

/// One dangling-reference check; returns how many rows it found.
async fn dangling(storage: &LibsqlTraceStorage, check: &Dangling) -> Result<usize, CliError> {
    let Dangling {
        what,
        from,
        cond,
        detail,
    } = check;
    let n = count(
        storage,
        &format!("SELECT COUNT(*) AS n FROM {from} WHERE {cond}"),
    )
    .await?;
    say!("{what}: {n}");
    if n > 0 {
        let examples = query(
            storage,
            &format!(
                "SELECT x.id AS id, {detail} AS detail FROM {from} WHERE {cond} \
                 ORDER BY x.id LIMIT {EXAMPLES}"
            ),
            vec![],
        )
        .await?;
        for row in &examples {
            say!("    id {}: {}", render(&row["id"]), render(&row["detail"]));
        }
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
