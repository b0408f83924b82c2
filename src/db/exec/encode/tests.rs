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
    let rows: Vec<(usize, Vec<i64>)> = rows.iter().map(|&(at, v)| (at, vec![v])).collect();
    answer_rows(steps, &rows, errors)
}

/// [`answer`] with rows of several integers each.
fn answer_rows(steps: usize, rows: &[(usize, Vec<i64>)], errors: &[usize]) -> BatchResult {
    let results: Vec<Json> = (0..steps)
        .map(|k| {
            if errors.contains(&k) {
                return Json::Null;
            }
            let rows: Vec<Json> = rows
                .iter()
                .filter(|(at, _)| *at == k)
                .map(|(_, row)| {
                    let cells = row
                        .iter()
                        .map(|v| json!({"type": "integer", "value": v.to_string()}));
                    Json::Array(cells.collect())
                })
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
/// statement with the rows in JSON, the batch's fix-ups and id read (one
/// statement each, the steps in one JSON argument), a riding lease,
/// `COMMIT` and `ROLLBACK`.
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
    assert_eq!(sql[3], FIX_UP_SQL[0]);
    assert_eq!(sql[4], FIX_UP_SQL[1]);
    assert_eq!(sql[5], STEP_IDS_SQL);
    for k in 3..=5 {
        let arg = &body["requests"][0]["batch"]["steps"][k]["stmt"]["args"][0]["value"];
        assert_eq!(arg.as_str(), Some(r#"[["s","a",7]]"#), "statement {k}");
    }
    assert!(sql[6].starts_with("INSERT INTO sqlite_sequence"));
    assert_eq!(&sql[9..], ["COMMIT", "ROLLBACK"]);

    // Committed: the step's row was made elsewhere (id 3, where this
    // writer gave 7), and the lease's block ends at 150. Steps: BEGIN,
    // then body statement k at k + 1.
    let result = answer_rows(sql.len(), &[(5, vec![7, 3]), (8, vec![150])], &[]);
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

/// The fix-ups and the id read run in every batch that makes steps: each
/// must find its rows through an index, or a batch's time grows with the
/// table. Only the steps' JSON argument is scanned. The one test here that
/// opens a database: SQLite's own planner on the schema.
#[tokio::test]
async fn fix_ups_find_their_rows_through_an_index() {
    let (_db, conn) = crate::schema::memory_with_schema().await;
    let steps = r#"[["s","step",7]]"#;
    let plan_of = |sql: String| {
        let conn = conn.clone();
        async move {
            let mut rows = match sql.matches('?').count() {
                1 => conn.query(&sql, [steps]).await,
                _ => conn.query(&sql, ("s", "step", 7)).await,
            }
            .expect("plan");
            let mut plan = Vec::new();
            while let Some(row) = rows.next().await.expect("row") {
                plan.push(row.get::<String>(3).expect("detail"));
            }
            plan
        }
    };
    for sql in FIX_UP_SQL.iter().chain([&STEP_IDS_SQL]) {
        let plan = plan_of(format!("EXPLAIN QUERY PLAN {sql}")).await;
        let scans: Vec<_> = plan.iter().filter(|s| s.starts_with("SCAN")).collect();
        assert_eq!(scans, ["SCAN j VIRTUAL TABLE INDEX 1:"], "{sql}: {plan:?}");
        assert!(
            plan.iter()
                .any(|s| s.starts_with("SEARCH s USING COVERING INDEX")),
            "{sql}: {plan:?}"
        );
        let searches = plan.iter().filter(|s| s.starts_with("SEARCH")).count();
        let updates = usize::from(sql.starts_with("UPDATE"));
        assert_eq!(searches, 1 + updates, "{sql}: {plan:?}");
    }
    for sql in FIX_UP_ONE_SQL {
        let plan = plan_of(format!("EXPLAIN QUERY PLAN {sql}")).await;
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{sql}: {plan:?}"
        );
        assert!(plan[0].starts_with("SEARCH"), "{sql}: {plan:?}");
    }
}

/// A step whose names hold a NUL, which JSON text cannot carry to SQLite,
/// gets a fix-up pair and an id read of its own, with bound names; the
/// other steps of the batch still go in the JSON argument.
#[test]
fn a_step_named_with_a_nul_is_fixed_up_alone() {
    let (tx, sql) = encoded(&[step(7, "a"), step(8, "b\0c")], true);
    let at = |text: &str| sql.iter().position(|s| s == text);
    let (Some(fix), Some(read)) = (at(FIX_UP_SQL[0]), at(STEP_IDS_SQL)) else {
        panic!("{sql:?}");
    };
    let body: Json = serde_json::from_slice(&tx.body).expect("JSON");
    let arg = |k: usize| body["requests"][0]["batch"]["steps"][k]["stmt"]["args"].clone();
    assert_eq!(arg(fix)[0]["value"], json!(r#"[["s","a",7]]"#));
    assert_eq!(arg(read)[0]["value"], json!(r#"[["s","a",7]]"#));
    let alone = at(FIX_UP_ONE_SQL[0]).expect("the NUL step's fix-up");
    assert_eq!(arg(alone)[1]["value"], json!("b\u{0}c"));
    let read_alone = sql
        .iter()
        .position(|s| s.starts_with("SELECT id FROM session_timesteps"))
        .expect("the NUL step's id read");
    // Both steps were made elsewhere: 7 is 3, 8 is 4.
    let result = answer_rows(sql.len(), &[(read, vec![7, 3]), (read_alone, vec![4])], &[]);
    let mut remap = StepRemap::default();
    assert!(matches!(
        tx.read_answer(result, &mut remap).expect("answer"),
        RemoteBatch::Committed(_)
    ));
    assert_eq!(remap.learnt(), 2);
}

/// `ops` encoded as one batch (with `multi`, runs as multi-row statements),
/// with no lease and nothing in flight, and the SQL of its statements.
fn encoded(ops: &[Op], multi: bool) -> (EncodedTx, Vec<String>) {
    let batch: Vec<&Op> = ops.iter().collect();
    let tx = RemoteEncoder::default()
        .encode(&StepRemap::default(), &batch, multi, &[], None)
        .expect("encode");
    let sql = sql_of(&tx);
    (tx, sql)
}

fn step_update(name: &str, completed_at: &str) -> Op {
    Op::UpdateTimestep {
        values: vec![
            Value::Text(completed_at.into()),
            Value::Text("s".into()),
            Value::Text(name.into()),
        ],
    }
}

/// The JSON argument of statement `k` of `tx`'s request.
fn json_arg(tx: &EncodedTx, k: usize) -> Json {
    let body: Json = serde_json::from_slice(&tx.body).expect("JSON");
    let arg = &body["requests"][0]["batch"]["steps"][k]["stmt"]["args"][0]["value"];
    serde_json::from_str(arg.as_str().expect("text")).expect("rows")
}

/// Steps and their updates join a run of inserts: the steps' rows go in
/// one statement, then their updates in one, the last update of a step
/// winning, as one after another.
#[test]
fn updates_of_steps_go_in_after_the_run_in_one_statement() {
    let ops = [
        step(7, "a"),
        event(100, 7),
        step_update("a", "t1"),
        step(8, "b"),
        event(101, 8),
        step_update("b", "t2"),
        step_update("a", "t3"),
    ];
    let (tx, sql) = encoded(&ops, true);
    let at = |text: &str| sql.iter().position(|s| s == text);
    let steps = at(&Table::Timesteps.insert_json_sql()).expect("the steps' insert");
    let updates = at(STEP_UPDATES_SQL).expect("the updates");
    assert!(steps < updates, "{sql:?}");
    assert_eq!(json_arg(&tx, steps).as_array().map(Vec::len), Some(2));
    assert_eq!(
        json_arg(&tx, updates),
        json!([["t2", "s", "b"], ["t3", "s", "a"]])
    );
    let events = at(&Table::Events.insert_json_sql()).expect("the events' insert");
    assert_eq!(json_arg(&tx, events).as_array().map(Vec::len), Some(2));
    assert!(!sql.iter().any(|s| s == UPDATE_TIMESTEP_SQL), "{sql:?}");
}

/// An update of a step inserted later in the batch finds no row if the
/// step is new, as it would one after another: it goes alone, before the
/// insert.
#[test]
fn an_update_of_a_step_inserted_later_goes_alone_before_it() {
    let ops = [
        event(100, 1),
        step_update("a", "t1"),
        event(101, 1),
        step(7, "a"),
        event(102, 7),
    ];
    let (_, sql) = encoded(&ops, true);
    let alone = sql
        .iter()
        .position(|s| s == UPDATE_TIMESTEP_SQL)
        .expect("the update alone");
    let steps = sql
        .iter()
        .position(|s| s == &Table::Timesteps.insert_json_sql())
        .expect("the step's insert");
    assert!(alone < steps, "{sql:?}");
    assert!(!sql.iter().any(|s| s == STEP_UPDATES_SQL), "{sql:?}");
}

/// One row by statement (after a multi-row statement failed), an update
/// of a step goes alone and names its operation.
#[test]
fn without_runs_an_update_of_a_step_goes_alone() {
    let (_, sql) = encoded(&[step(7, "a"), step_update("a", "t1")], false);
    assert_eq!(sql.iter().filter(|s| *s == UPDATE_TIMESTEP_SQL).count(), 1);
    assert!(!sql.iter().any(|s| s == STEP_UPDATES_SQL), "{sql:?}");
}

/// The updates of a run's steps, on a real database: the last update of
/// each step wins, other steps are untouched, and the step is found
/// through its unique index.
#[tokio::test]
async fn updates_of_steps_apply_on_a_real_database() {
    let (_db, conn) = crate::schema::memory_with_schema().await;
    for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
        conn.execute(
            "INSERT INTO session_timesteps (id, session_id, step_id, step_index) \
             VALUES (?, 's', ?, 0)",
            (id, name),
        )
        .await
        .expect("step");
    }
    let ops = [
        step_update("a", "t1"),
        step_update("b", "t2"),
        step_update("a", "t3"),
    ];
    let batch: Vec<&Op> = ops.iter().collect();
    let stmt = step_updates(&batch, &[0, 1, 2]).expect("a statement");
    conn.execute(&stmt.sql, stmt.values())
        .await
        .expect("update");
    let mut rows = conn
        .query(
            "SELECT step_id, completed_at FROM session_timesteps ORDER BY id",
            (),
        )
        .await
        .expect("query");
    let mut got = Vec::new();
    while let Some(row) = rows.next().await.expect("row") {
        got.push((
            row.get::<String>(0).expect("step"),
            row.get::<Option<String>>(1).expect("completed_at"),
        ));
    }
    let want = [("a", Some("t3")), ("b", Some("t2")), ("c", None)];
    let want: Vec<(String, Option<String>)> = want
        .iter()
        .map(|(s, t)| (s.to_string(), t.map(str::to_string)))
        .collect();
    assert_eq!(got, want);
    let mut plan = conn
        .query(&format!("EXPLAIN QUERY PLAN {}", stmt.sql), stmt.values())
        .await
        .expect("plan");
    let mut details = Vec::new();
    while let Some(row) = plan.next().await.expect("row") {
        details.push(row.get::<String>(3).expect("detail"));
    }
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("SEARCH session_timesteps USING")),
        "{details:?}"
    );
    assert_eq!(
        details.iter().filter(|d| d.starts_with("SCAN")).count(),
        1,
        "{details:?}"
    );
}

/// A step is known by its names: an update before an insert of the same
/// step goes alone even when that insert carries no id of its own.
#[test]
fn an_update_before_a_step_without_an_id_goes_alone() {
    let mut unnamed = step(7, "a");
    if let Op::Insert { values, .. } = &mut unnamed {
        values[StepCol::Id.index()] = Value::Null;
    }
    let (_, sql) = encoded(&[event(100, 1), step_update("a", "t1"), unnamed], true);
    assert_eq!(sql.iter().filter(|s| *s == UPDATE_TIMESTEP_SQL).count(), 1);
    assert!(!sql.iter().any(|s| s == STEP_UPDATES_SQL), "{sql:?}");
}

/// Of two inserts of one step the first makes the row: a run of steps
/// with a value that has no JSON form keeps its order, all bound, rather
/// than send the others first as JSON.
#[test]
fn a_run_of_steps_keeps_its_order_when_one_must_be_bound() {
    let mut with_nul = step(8, "a");
    if let Op::Insert { values, .. } = &mut with_nul {
        values[StepCol::StepMetadata.index()] = Value::Text("{\"k\":\"x\0y\"}".into());
    }
    let (_, sql) = encoded(&[with_nul, step(7, "a"), event(100, 7)], true);
    assert!(
        !sql.contains(&Table::Timesteps.insert_json_sql()),
        "{sql:?}"
    );
    let bound = sql
        .iter()
        .filter(|s| s.starts_with("INSERT INTO session_timesteps"))
        .count();
    assert_eq!(bound, 1, "{sql:?}");
}
