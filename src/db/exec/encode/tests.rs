//! The encoder on its own: requests read back as JSON, answers made up as
//! the server would give them. No server; one test opens an in-memory
//! database for SQLite's plan of the fix-ups.

use serde_json::{json, Value as Json};

use super::*;
use crate::db::columns::{Columns, EventCol, StepCol};
use crate::db::exec::json_form::{push_json_value, JSON_REAL_RANGE};
use crate::db::hrana::BatchResult;
use crate::db::tx::marker;

fn event(id: i64, step: i64) -> Op {
    let mut values = vec![Value::Null; Table::Events.columns().len()];
    values[EventCol::Id.index()] = Value::Integer(id);
    values[EventCol::SessionId.index()] = Value::Text("s".into());
    values[EventCol::TimestepId.index()] = Value::Integer(step);
    Op::Insert {
        table: Table::Events,
        values,
    }
}

/// An event with a blob in it: its rows have no JSON form, so they go as
/// bound parameters.
fn blob_event(id: i64, step: i64) -> Op {
    let mut op = event(id, step);
    if let Op::Insert { values, .. } = &mut op {
        values[EventCol::Metadata.index()] = Value::Blob(vec![0, 1]);
    }
    op
}

fn step(id: i64, name: &str) -> Op {
    let mut values = vec![Value::Null; Table::Timesteps.columns().len()];
    values[StepCol::Id.index()] = Value::Integer(id);
    values[StepCol::SessionId.index()] = Value::Text("s".into());
    values[StepCol::StepId.index()] = Value::Text(name.into());
    Op::Insert {
        table: Table::Timesteps,
        values,
    }
}

/// The SQL of each step of the request, in order.
fn sql_of(tx: &EncodedTx) -> Vec<String> {
    let body: Json = serde_json::from_slice(&tx.body).expect("JSON");
    let steps = body["requests"][0]["batch"]["steps"]
        .as_array()
        .expect("steps")
        .clone();
    steps
        .iter()
        .map(|s| s["stmt"]["sql"].as_str().expect("sql").to_string())
        .collect()
}

/// The server's answer: every step ran, `rows` by step, `errors` by step.
fn answer(steps: usize, rows: &[(usize, i64)], errors: &[usize]) -> BatchResult {
    let results: Vec<Json> = (0..steps)
        .map(|k| {
            if errors.contains(&k) {
                return Json::Null;
            }
            let rows: Vec<Json> = rows
                .iter()
                .filter(|(at, _)| *at == k)
                .map(|(_, v)| json!([{"type": "integer", "value": v.to_string()}]))
                .collect();
            json!({ "rows": rows })
        })
        .collect();
    let errs: Vec<Json> = (0..steps)
        .map(|k| {
            if errors.contains(&k) {
                json!({"message": "UNIQUE constraint failed", "code": "SQLITE_CONSTRAINT"})
            } else {
                Json::Null
            }
        })
        .collect();
    serde_json::from_value(json!({"step_results": results, "step_errors": errs})).expect("answer")
}

#[test]
fn multi_row_statements_come_in_powers_of_two() {
    let events = Table::Events;
    assert_eq!(chunk_rows(events, 1), 1);
    assert_eq!(chunk_rows(events, 13), 8);
    assert_eq!(chunk_rows(events, 64), 64);
    let most = REMOTE_MAX_PARAMS / events.columns().len();
    let top = chunk_rows(events, 1 << 20);
    assert!(
        top.is_power_of_two() && top <= most && top * 2 > most,
        "{top}"
    );
}

/// Batches of every length from 1 to 3,000 rows, as multi-row inserts:
/// the text cache stays within its stated bound.
#[test]
fn the_insert_text_cache_is_bounded() {
    let mut encoder = RemoteEncoder::default();
    let remap = StepRemap::default();
    let ops: Vec<Op> = (1..=3000).map(|id| blob_event(id, 1)).collect();
    for n in (1..=300).chain([1000, 2047, 2500, 3000]) {
        let batch: Vec<&Op> = ops[..n].iter().collect();
        encoder
            .encode(&remap, &batch, true, &[], None)
            .expect("encode");
    }
    let most = REMOTE_MAX_PARAMS / Table::Events.columns().len();
    let bound = (usize::BITS - most.leading_zeros()) as usize;
    for table in Table::ALL {
        let most = REMOTE_MAX_PARAMS / table.columns().len();
        assert!(usize::BITS - most.leading_zeros() <= 14, "{table:?}");
    }
    assert!(
        encoder.insert_text.len() <= bound,
        "{}",
        encoder.insert_text.len()
    );
    // The worst case over every table, as the docs state it.
    let mut bytes = 0;
    for table in Table::ALL {
        let mut rows = 1;
        while rows <= chunk_rows(table, usize::MAX) {
            bytes += encoder.insert_text(table, rows).len();
            rows *= 2;
        }
    }
    assert!(bytes < 1 << 20, "{bytes}");
}

/// Rows with a value that has no JSON form go as bound parameters, in
/// statements of powers of two (13 rows as 8, 4 and 1); in a run of rows
/// with ids, only those rows do, and the rest still go as JSON.
#[test]
fn rows_without_a_json_form_go_as_bound_parameters() {
    let mut encoder = RemoteEncoder::default();
    let remap = StepRemap::default();
    let ops: Vec<Op> = (100..113).map(|id| blob_event(id, 7)).collect();
    let batch: Vec<&Op> = ops.iter().collect();
    let tx = encoder
        .encode(&remap, &batch, true, &[], None)
        .expect("encode");
    let sql = sql_of(&tx);
    let rows: Vec<usize> = sql[1..4]
        .iter()
        .map(|s| s.matches("), (").count() + 1)
        .collect();
    assert_eq!(rows, [8, 4, 1]);
    assert!(sql[1..4].iter().all(|s| s.contains(" VALUES (")));

    let mut ops: Vec<Op> = (100..112).map(|id| event(id, 7)).collect();
    ops.insert(5, blob_event(112, 7));
    let batch: Vec<&Op> = ops.iter().collect();
    let tx = encoder
        .encode(&remap, &batch, true, &[], None)
        .expect("encode");
    let sql = sql_of(&tx);
    assert_eq!(sql[1], Table::Events.insert_json_sql());
    let body: Json = serde_json::from_slice(&tx.body).expect("JSON");
    let arg = &body["requests"][0]["batch"]["steps"][1]["stmt"]["args"][0]["value"];
    let rows: Json = serde_json::from_str(arg.as_str().expect("text")).expect("rows");
    assert_eq!(rows.as_array().map(Vec::len), Some(12));
    assert_eq!(sql[2], Table::Events.insert_sql(1, false));
}

/// Floats and strings with no JSON form of their own, and the floats at
/// the ends of the range that has one.
#[test]
fn values_without_a_json_form_are_told_apart() {
    let goes = |v: Value| push_json_value(&mut String::new(), &v).is_some();
    for v in [
        Value::Blob(vec![1]),
        Value::Text("a\0b".into()),
        Value::Real(f64::NAN),
        Value::Real(f64::INFINITY),
        Value::Real(1e-300),
        Value::Real(f64::MIN_POSITIVE),
        Value::Real(5e-324),
        Value::Real(f64::MAX),
    ] {
        assert!(!goes(v.clone()), "{v:?}");
    }
    for v in [
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Real(0.0),
        Value::Real(-0.0),
        Value::Real(1e-290),
        Value::Real(-1e290),
        Value::Text("\"\\\u{1}\u{7f}é😀".into()),
    ] {
        assert!(goes(v.clone()), "{v:?}");
    }
}

/// The same rows through the JSON form and through bound parameters, into
/// two in-memory databases: every value reads back the same, a float to
/// the bit. The floats are 20,000 random bit patterns in the JSON range,
/// with the decimal fractions and integers that rewards and times are.
#[test]
fn rows_as_json_read_back_as_bound_parameters() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // xorshift64*: reproducible, and no dependency for it.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut floats = vec![
        0.0,
        -0.0,
        0.1,
        0.2,
        0.3,
        1.0 / 3.0,
        1e-290,
        1e290,
        9007199254740993.0,
    ];
    floats.extend((1..1000).map(|i| f64::from(i) * 0.001));
    while floats.len() < 20_000 {
        let f = f64::from_bits(next());
        if JSON_REAL_RANGE.contains(&f.abs()) {
            floats.push(f);
        }
    }
    let texts = ["plain", "q\"uote", "back\\slash", "ctl\u{1}\n\t", "é😀", ""];
    let ops: Vec<Op> = floats
        .chunks(2)
        .enumerate()
        .map(|(k, pair)| {
            let mut op = event(k as i64 + 1, 1);
            if let Op::Insert { values, .. } = &mut op {
                values[EventCol::EventTime.index()] = Value::Real(pair[0]);
                values[EventCol::Reward.index()] = Value::Real(pair[pair.len() - 1]);
                values[EventCol::MessageTime.index()] = Value::Integer(if k % 2 == 0 {
                    i64::MAX
                } else {
                    i64::MIN + k as i64 - 1
                });
                values[EventCol::Metadata.index()] = Value::Text(texts[k % texts.len()].into());
                values[EventCol::EventType.index()] = Value::Text("environment".into());
            }
            op
        })
        .collect();
    let batch: Vec<&Op> = ops.iter().collect();
    let rows: Vec<usize> = (0..batch.len()).collect();
    let text = json_rows(&StepRemap::default(), Table::Events, &batch, &rows).expect("JSON form");
    rt.block_on(async {
        let (_a, json_db) = crate::schema::memory_with_schema().await;
        json_db
            .execute(&Table::Events.insert_json_sql(), [Value::Text(text)])
            .await
            .expect("JSON rows");
        let (_b, bound_db) = crate::schema::memory_with_schema().await;
        for op in &ops {
            if let Op::Insert { values, .. } = op {
                bound_db
                    .execute(&Table::Events.insert_sql(1, false), values.clone())
                    .await
                    .expect("bound row");
            }
        }
        let read = |conn: libsql::Connection| async move {
            let sql = format!(
                "SELECT {} FROM events ORDER BY id",
                Table::Events.columns().join(", ")
            );
            let mut out = Vec::new();
            let mut rows = conn.query(&sql, ()).await.expect("select");
            while let Some(row) = rows.next().await.expect("row") {
                let values: Vec<Value> = (0..Table::Events.columns().len())
                    .map(|i| row.get_value(i as i32).expect("value"))
                    .collect();
                out.push(values);
            }
            out
        };
        let (from_json, bound) = (read(json_db).await, read(bound_db).await);
        assert_eq!(from_json.len(), ops.len());
        for (a, b) in from_json.iter().zip(&bound) {
            for (x, y) in a.iter().zip(b) {
                match (x, y) {
                    (Value::Real(x), Value::Real(y)) => {
                        assert_eq!(x.to_bits(), y.to_bits(), "{x:e} {y:e}")
                    }
                    _ => assert_eq!(x, y),
                }
            }
        }
    });
}

/// One transaction: `BEGIN`, a step alone, a run of 13 events as one
/// statement with the rows in JSON, the step's fix-ups and id read, a
/// riding lease, `COMMIT` and `ROLLBACK`.
#[test]
fn a_batch_is_one_transaction_with_its_lease() {
    let mut encoder = RemoteEncoder::default();
    let remap = StepRemap::default();
    let mut ops = vec![step(7, "a")];
    ops.extend((100..113).map(|id| event(id, 7)));
    let batch: Vec<&Op> = ops.iter().collect();
    let tx = encoder
        .encode(&remap, &batch, true, &[(Table::Events, 50)], None)
        .expect("encode");
    let sql = sql_of(&tx);
    assert_eq!(sql[0], "BEGIN IMMEDIATE");
    assert!(
        sql[1].starts_with("INSERT INTO session_timesteps"),
        "{}",
        sql[1]
    );
    assert_eq!(sql[2], Table::Events.insert_json_sql());
    let body: Json = serde_json::from_slice(&tx.body).expect("JSON");
    let arg = &body["requests"][0]["batch"]["steps"][2]["stmt"]["args"][0]["value"];
    let rows: Json = serde_json::from_str(arg.as_str().expect("text")).expect("rows");
    assert_eq!(rows.as_array().map(Vec::len), Some(13));
    assert!(sql[3].starts_with("UPDATE events"));
    assert!(sql[4].starts_with("UPDATE messages"));
    assert!(sql[5].starts_with("SELECT id FROM session_timesteps"));
    assert!(sql[6].starts_with("INSERT INTO sqlite_sequence"));
    assert_eq!(&sql[9..], ["COMMIT", "ROLLBACK"]);

    // Committed: the step's row was made elsewhere (id 3), and the lease's
    // block ends at 150. Steps: BEGIN, then body statement k at k + 1.
    let result = answer(sql.len(), &[(5, 3), (8, 150)], &[]);
    let mut remap = StepRemap::default();
    match tx.read_answer(result, &mut remap).expect("answer") {
        RemoteBatch::Committed(blocks) => assert_eq!(blocks.first(), Some(&(101..151))),
        other => panic!("{other:?}"),
    }
    assert_eq!(remap.learnt(), 1);
    // The next batch files its events under the real step.
    let mut row: Vec<Arg<'_>> = (0..Table::Events.columns().len())
        .map(|_| Arg::owned(Value::Null))
        .collect();
    row[EventCol::TimestepId.index()] = Arg::owned(Value::Integer(7));
    remap.args(Table::Events, &mut row);
    assert!(matches!(
        *row[EventCol::TimestepId.index()].0,
        Value::Integer(3)
    ));
}

/// A statement that carries one operation names it when it fails; a
/// multi-row one asks for the batch row by row.
#[test]
fn a_refused_statement_names_its_operation() {
    let mut encoder = RemoteEncoder::default();
    let remap = StepRemap::default();
    let ops = [step(7, "a"), event(100, 7), event(101, 7)];
    let batch: Vec<&Op> = ops.iter().collect();

    let tx = encoder
        .encode(&remap, &batch, false, &[], None)
        .expect("encode");
    let n = sql_of(&tx).len();
    let failed = tx.read_answer(answer(n, &[], &[3]), &mut StepRemap::default());
    match failed.expect("answer") {
        RemoteBatch::Failed(by_op) => {
            assert_eq!(by_op.iter().map(|(j, _)| *j).collect::<Vec<_>>(), [2]);
        }
        other => panic!("{other:?}"),
    }

    let tx = encoder
        .encode(&remap, &batch, true, &[], None)
        .expect("encode");
    let n = sql_of(&tx).len();
    let failed = tx.read_answer(answer(n, &[], &[2]), &mut StepRemap::default());
    assert!(matches!(failed, Ok(RemoteBatch::MultiRowFailed(_))));
}

/// Sent behind a batch in flight: the guard comes first and names that
/// batch's marker row; the steps of the batch before are fixed up too; a
/// failed guard means it ran first.
#[test]
fn a_batch_behind_another_is_guarded_by_its_marker() {
    let mut encoder = RemoteEncoder::default();
    let remap = StepRemap::default();
    let before = [step(7, "a"), event(100, 7)];
    let before: Vec<&Op> = before.iter().collect();
    let mark = marker(&before).expect("marker");
    assert_eq!((mark.table, mark.id), (Table::Events, 100));
    let ops = [event(101, 7)];
    let batch: Vec<&Op> = ops.iter().collect();
    let behind = Behind {
        marker: mark,
        ops: &before,
    };
    let tx = encoder
        .encode(&remap, &batch, true, &[], Some(behind))
        .expect("encode");
    let sql = sql_of(&tx);
    assert!(
        sql[1].contains("EXISTS (SELECT 1 FROM events WHERE id = ?)"),
        "{}",
        sql[1]
    );
    assert!(sql[2].starts_with("INSERT INTO events"));
    assert!(
        sql[3].starts_with("UPDATE events"),
        "the step before is fixed up"
    );

    let ran_first = answer(sql.len(), &[], &[1]);
    assert!(tx.ran_first(&ran_first));
    let read = tx.read_answer(ran_first, &mut StepRemap::default());
    assert!(matches!(read, Ok(RemoteBatch::RanFirst)));
}

/// A batch of steps only has no marker: nothing can be sent behind it.
#[test]
fn steps_alone_have_no_marker() {
    let ops = [step(1, "a"), step(2, "b")];
    let ops: Vec<&Op> = ops.iter().collect();
    assert!(marker(&ops).is_none());
}

/// The fix-ups run once per new step of every batch: each must find its
/// rows through an index, or a batch's time grows with the table. The one
/// test here that opens a database: SQLite's own planner on the schema.
#[tokio::test]
async fn fix_ups_find_their_rows_through_an_index() {
    let (_db, conn) = crate::schema::memory_with_schema().await;
    for sql in FIX_UP_SQL {
        let mut rows = conn
            .query(&format!("EXPLAIN QUERY PLAN {sql}"), ("s", "step", 7))
            .await
            .expect("plan");
        let mut plan = Vec::new();
        while let Some(row) = rows.next().await.expect("row") {
            plan.push(row.get::<String>(3).expect("detail"));
        }
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{sql}: {plan:?}"
        );
        assert!(plan[0].starts_with("SEARCH"), "{sql}: {plan:?}");
    }
}
