//! The writer's `tracing` output: one DEBUG span per batch with its size,
//! attempts and outcome, and no payload in any of it.
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use trace_writer::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Every span's fields and every event's text, as recorded.
#[derive(Default)]
struct Seen {
    spans: HashMap<u64, (String, HashMap<String, String>)>,
    events: Vec<String>,
}

/// A minimal global subscriber: the writer logs from its own thread.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    next: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.seen
            .lock()
            .unwrap()
            .spans
            .insert(id, (attrs.metadata().name().to_owned(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.seen.lock().unwrap().spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.seen.lock().unwrap().events.push(format!("{fields:?}"));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_is_a_debug_span_with_its_size_attempts_and_outcome() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(recorder.clone()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.db");
    let w = BufferedTraceWriter::new(
        StorageConfig::file(path.to_str().unwrap()),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    w.query(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.system_instance_id = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
        vec![],
    )
    .await
    .unwrap();
    w.ensure_session("s", chrono::Utc::now(), &serde_json::json!({}))
        .await
        .unwrap();
    for i in 0..10 {
        let mut event = workload::small_event(i);
        if let TracingEvent::Environment(e) = &mut event {
            e.base.system_instance_id = if i == 3 { "poison" } else { "secret-payload" }.into();
        }
        w.insert_event("s", None, &event).await.unwrap();
    }
    assert!(w.flush().await.is_err(), "the refused row is reported");
    w.close().await.unwrap();

    let seen = recorder.seen.lock().unwrap();
    let batches: Vec<&HashMap<String, String>> = seen
        .spans
        .values()
        .filter(|(name, _)| name == "batch")
        .map(|(_, f)| f)
        .collect();
    assert!(!batches.is_empty());
    for b in &batches {
        for field in ["ops", "bytes", "attempts", "outcome"] {
            assert!(b.contains_key(field), "{field} missing in {b:?}");
        }
    }
    let ops: u64 = batches
        .iter()
        .map(|b| b["ops"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(ops, 11, "{batches:?}");
    assert!(
        batches
            .iter()
            .any(|b| b["outcome"] == "\"committed, some refused\""),
        "{batches:?}"
    );
    // No payload in any span or event.
    let all = format!("{:?} {:?}", seen.events, batches);
    assert!(!all.contains("secret-payload"), "{all}");
}
