//! Tagged rows and the exactly-once check the fault tests share.
//!
//! Every event a fault test writes carries its source (a task or a child
//! process) and its number in its metadata, so the stored rows can be
//! matched one by one with the ids the writer handed out.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;
use trace_writer::*;

/// A small event tagged with its source and its number in that source.
pub fn tagged_event(source: usize, i: usize) -> TracingEvent {
    let mut event = workload::small_event(i);
    if let TracingEvent::Environment(e) = &mut event {
        e.base.metadata.insert("source".into(), json!(source));
        e.base.metadata.insert("i".into(), json!(i));
    }
    event
}

/// One stored event: its id and the tags it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tagged {
    pub source: i64,
    pub i: i64,
}

/// Every event in the table as (id, tags), by id. Untagged rows have
/// source and number -1.
pub async fn stored(storage: &dyn TraceStorage) -> Vec<(i64, Tagged)> {
    let rows = storage
        .query(
            "SELECT id, json_extract(metadata, '$.source') AS source, \
             json_extract(metadata, '$.i') AS i FROM events ORDER BY id",
            vec![],
        )
        .await
        .expect("read the events back");
    rows.iter()
        .map(|r| {
            (
                r["id"].as_i64().expect("an id"),
                Tagged {
                    source: r["source"].as_i64().unwrap_or(-1),
                    i: r["i"].as_i64().unwrap_or(-1),
                },
            )
        })
        .collect()
}

/// Checks that the table holds exactly the acknowledged events, each once:
/// no id twice, no (source, number) twice, nothing missing, nothing extra,
/// and every acknowledged id holds the row it was handed out for. Panics
/// with a summary of what is wrong, prefixed by `what`.
pub fn assert_exactly_once(what: &str, stored: &[(i64, Tagged)], acked: &HashMap<i64, Tagged>) {
    let mut problems = Vec::new();
    let ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    if ids.len() != stored.len() {
        problems.push(format!("{} duplicate ids", stored.len() - ids.len()));
    }
    let mut per_tag: HashMap<Tagged, usize> = HashMap::new();
    for (_, tag) in stored {
        *per_tag.entry(*tag).or_default() += 1;
    }
    let twice = per_tag.values().filter(|&&n| n > 1).count();
    if twice > 0 {
        problems.push(format!("{twice} events stored more than once"));
    }
    let by_id: HashMap<i64, Tagged> = stored.iter().copied().collect();
    let mut missing = 0usize;
    let mut wrong = Vec::new();
    for (id, tag) in acked {
        match by_id.get(id) {
            None => missing += 1,
            Some(got) if got != tag => wrong.push((*id, *tag, *got)),
            Some(_) => {}
        }
    }
    if missing > 0 {
        problems.push(format!("{missing} acknowledged ids missing"));
    }
    if !wrong.is_empty() {
        wrong.sort_unstable();
        problems.push(format!(
            "{} ids hold another row than the one they were handed out for, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        ));
    }
    let extra = stored
        .iter()
        .filter(|(id, _)| !acked.contains_key(id))
        .count();
    if extra > 0 {
        problems.push(format!("{extra} rows no one acknowledged"));
    }
    assert!(
        problems.is_empty(),
        "{what}: {} stored, {} acknowledged: {}; stored per source: {:?}",
        stored.len(),
        acked.len(),
        problems.join("; "),
        per_source(stored)
    );
}

/// How many rows each source has in the table.
pub fn per_source(stored: &[(i64, Tagged)]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for (_, tag) in stored {
        *counts.entry(tag.source).or_default() += 1;
    }
    counts
}
