//! `trace-writer replay SPILL_FILE --db URL`.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use trace_writer::{replay_spill_file_with_progress, ReplayReport};

use crate::db::{CliError, DbArgs};
use crate::Outcome;

/// Applies the spill file and prints the report.
pub(crate) async fn run(db: &DbArgs, spill: &Path, create: bool) -> Result<Outcome, CliError> {
    if !create {
        db.require_existing()
            .map_err(|e| CliError::new(format!("{} (pass --create to make it)", e.message())))?;
    }
    if !spill.is_file() {
        return Err(CliError::new(format!(
            "spill file `{}` does not exist or is not a file",
            spill.display()
        )));
    }
    // On stderr, and only when it is a terminal: the report stays on stdout.
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} operations, {per_sec}, eta {eta}")
    {
        bar.set_style(style);
    }
    let shown = bar.clone();
    let replayed = replay_spill_file_with_progress(db.config(true), spill, move |done, total| {
        shown.set_length(total as u64);
        shown.set_position(done as u64);
    })
    .await;
    bar.finish_and_clear();
    let report = replayed
        .map_err(|e| CliError::new(format!("replay of `{}` failed: {e}", spill.display())))?;
    say!("replayed {} into {}", spill.display(), db.shown());
    let refused = print_report(&report)?;
    if db.is_memory() {
        say!("note: the database is in memory and was discarded on exit");
    }
    Ok(if refused == 0 {
        Outcome::Clean
    } else {
        Outcome::Problems
    })
}

/// Prints what a replay did; returns how many lines were refused.
///
/// TO FINISH when `ReplayReport` gains `duplicates`, `updates` and `refused`
/// (`RefusedLine { line, kind, cause }`): print those fields, one line per
/// refused line, and return `report.refused.len()`. Until then nothing can
/// be refused, so it returns 0. Keep the `name: N` shape: tests/cli.rs reads it.
fn print_report(report: &ReplayReport) -> Result<usize, CliError> {
    say!("operations: {}", report.operations);
    say!("inserted:   {}", report.inserted);
    say!(
        "duplicates: {} (already in the database)",
        report.duplicates
    );
    say!("updates:    {}", report.updates);
    say!("refused:    {}", report.refused.len());
    for r in &report.refused {
        say!("  line {}: {}: {}", r.line, r.kind, r.cause);
    }
    Ok(report.refused.len())
}
