//! The JSON form of a row: its values as one JSON array, which the server
//! turns back into the same SQL values with `json_each` and `->>` (see
//! `Table::insert_json_sql`). A remote insert binds its rows this way
//! wherever every value has such a form (`encode.rs`, and one row at a time
//! in `mod.rs` and `remote.rs`).

use libsql::Value;

/// Floats outside this range (and non-finite ones) do not go in a JSON
/// rows argument: see [`push_json_value`].
pub(super) const JSON_REAL_RANGE: std::ops::RangeInclusive<f64> = 1e-290..=1e290;

/// Appends `v` to a JSON rows argument as text that SQLite's `->>` turns
/// back into the same value, or returns `None` when `v` has no such text
/// (the rows then go as bound parameters).
///
/// - `NULL`, integers and strings map one to one (JSON integers are read
///   as 64-bit integers). A string holding U+0000 does not go: SQL text
///   from JSON would end there.
/// - A float is written with 20 significant digits, its exact value
///   rounded: the text is within 10^-19 of it, relatively. SQLite keeps
///   the first 19 or so digits and scales them by powers of ten, in x87
///   extended precision (a 64-bit significand) where the platform has it
///   (SQLite 3.45, which sqld 0.24.33 runs, on x86) or in double-double
///   arithmetic (3.47 and later). The dropped digits and the scaling
///   together stay under a relative 2^-57, far inside the half unit in the
///   last place (at least 2^-54) around the float, so the nearest float to
///   what SQLite computes is the float itself. The range keeps every
///   intermediate of that scaling a normal number, where those error
///   bounds hold. Zero goes too, with its sign (SQLite keeps the sign no
///   more than it does for a bound `-0.0`); NaN and infinities do not go.
/// - A blob does not go: JSON has no form for it.
pub(super) fn push_json_value(out: &mut String, v: &Value) -> Option<()> {
    use std::fmt::Write as _;
    if !has_json_form(v) {
        return None;
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::Integer(i) => write!(out, "{i}").ok()?,
        Value::Real(f) => write!(out, "{f:.19e}").ok()?,
        Value::Text(t) => crate::db::json::push_str_literal(out, t).ok()?,
        Value::Blob(_) => return None,
    }
    Some(())
}

/// Whether `v` has a JSON form (see [`push_json_value`]).
pub(super) fn has_json_form(v: &Value) -> bool {
    match v {
        Value::Null | Value::Integer(_) => true,
        Value::Real(f) => *f == 0.0 || JSON_REAL_RANGE.contains(&f.abs()),
        Value::Text(t) => text_has_json_form(t),
        Value::Blob(_) => false,
    }
}

/// Whether text has a JSON form: SQLite's JSON functions end a string at
/// U+0000.
pub(super) fn text_has_json_form(t: &str) -> bool {
    !t.contains('\0')
}

/// One row's values as a JSON array, appended to `text`; `None` if a value
/// has no JSON form.
pub(super) fn push_json_row<'v>(
    text: &mut String,
    values: impl Iterator<Item = &'v Value>,
) -> Option<()> {
    text.push('[');
    for (k, value) in values.enumerate() {
        if k > 0 {
            text.push(',');
        }
        push_json_value(text, value)?;
    }
    text.push(']');
    Some(())
}

/// The argument of [`Table::insert_json_sql`] for one row, or `None` if a
/// value has no JSON form: what a remote statement of one row binds, so
/// that its floats reach the server exactly (see [`push_json_value`]).
pub(crate) fn json_row(values: &[Value]) -> Option<Value> {
    let mut text = String::with_capacity(values.len() * 16 + 4);
    text.push('[');
    push_json_row(&mut text, values.iter())?;
    text.push(']');
    Some(Value::Text(text))
}
