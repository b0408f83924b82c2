//! Query parameters given by name, bound by position.
//!
//! [`TraceStorage::query`](crate::TraceStorage::query) takes its parameters
//! by position. SQLite numbers a statement's named parameters (`:name`,
//! `@name`, `$name`) in the order they first appear, after any `?NNN` seen
//! before them, so a map of named values becomes the positional list that
//! binds the same way: [`QueryParams::bind`] scans the SQL for its
//! parameters (skipping string literals, quoted identifiers and comments)
//! and orders the values to match. The scan is a pure function of the text.

use serde_json::Value;

use crate::error::TracingError;

/// The parameters of a query, by position or by name.
///
/// ```
/// use serde_json::json;
/// use trace_writer::QueryParams;
///
/// let named = QueryParams::Named(vec![
///     ("kind".into(), json!("cais")),
///     (":sid".into(), json!("s1")),
/// ]);
/// let sql = "SELECT * FROM events WHERE session_id = :sid AND event_type = :kind";
/// assert_eq!(named.bind(sql).unwrap(), vec![json!("s1"), json!("cais")]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum QueryParams {
    /// Values for `?`, `?NNN` in order.
    Positional(Vec<Value>),
    /// Values for `:name`, `@name` and `$name` parameters. A key may carry
    /// its prefix (`":sid"`) or not (`"sid"`, which fits any prefix).
    Named(Vec<(String, Value)>),
}

impl From<Vec<Value>> for QueryParams {
    fn from(values: Vec<Value>) -> Self {
        QueryParams::Positional(values)
    }
}

impl QueryParams {
    /// The values in the positional order `sql` binds them in.
    ///
    /// A key that names no parameter of the SQL is ignored, as the original
    /// binding's named binding ignored it.
    ///
    /// # Errors
    /// `InvalidInput` for named values when the SQL names a parameter that
    /// has no value or has a positional `?` parameter, or when two keys name
    /// the same parameter (`"sid"` and `":sid"`). Positional values are
    /// passed through unchecked: the database counts them.
    pub fn bind(self, sql: &str) -> Result<Vec<Value>, TracingError> {
        let named = match self {
            QueryParams::Positional(values) => return Ok(values),
            QueryParams::Named(named) => named,
        };
        let slots = scan(sql);
        let count = slots.iter().map(|s| s.index).max().unwrap_or(0);
        let mut out: Vec<Option<Value>> = vec![None; count];
        for slot in &slots {
            let Some(name) = &slot.name else {
                return Err(TracingError::InvalidInput(format!(
                    "params: the SQL has a positional parameter (?{}), but the parameters are named",
                    slot.index
                )));
            };
            if out[slot.index - 1].is_some() {
                continue;
            }
            let bare = &name[1..];
            let matches: Vec<usize> = named
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| k == name || k == bare)
                .map(|(i, _)| i)
                .collect();
            match matches.as_slice() {
                [i] => out[slot.index - 1] = Some(named[*i].1.clone()),
                [] => {
                    return Err(TracingError::InvalidInput(format!(
                        "params: no value for parameter {name}"
                    )))
                }
                _ => {
                    return Err(TracingError::InvalidInput(format!(
                        "params: more than one key names parameter {name}"
                    )))
                }
            }
        }
        // Every index below the largest is a slot (SQLite numbers them
        // densely, except for `?NNN`, which the loop above refused).
        out.into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    TracingError::InvalidInput(format!("params: no value for parameter ?{}", i + 1))
                })
            })
            .collect()
    }
}

/// One parameter of the SQL: its 1-based index, and its name with its
/// prefix (`None` for `?` and `?NNN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) index: usize,
    pub(crate) name: Option<String>,
}

/// A character that continues an identifier or a parameter name, as
/// SQLite's tokenizer has it (letters, digits, `_`, `$`, and every
/// non-ASCII character).
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// The parameters of `sql` in order of appearance, numbered as SQLite
/// numbers them. Text inside string literals, quoted identifiers
/// (`"…"`, `` `…` ``, `[…]`) and comments is skipped.
pub(crate) fn scan(sql: &str) -> Vec<Slot> {
    let chars: Vec<char> = sql.chars().collect();
    let mut slots = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut highest = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' => {
                // A quoted run; a doubled quote is an escaped quote.
                i += 1;
                while i < chars.len() {
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            '?' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end].is_ascii_digit() {
                    end += 1;
                }
                let index = if end > start {
                    let digits: String = chars[start..end].iter().collect();
                    digits.parse().unwrap_or(usize::MAX)
                } else {
                    highest + 1
                };
                highest = highest.max(index);
                slots.push(Slot { index, name: None });
                i = end;
            }
            ':' | '@' | '$' if chars.get(i + 1).is_some_and(|&n| id_char(n)) => {
                let mut end = i + 1;
                while end < chars.len() && id_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[i..end].iter().collect();
                let index = match names.iter().find(|(n, _)| *n == name) {
                    Some((_, index)) => *index,
                    None => {
                        highest += 1;
                        names.push((name.clone(), highest));
                        highest
                    }
                };
                slots.push(Slot {
                    index,
                    name: Some(name),
                });
                i = end;
            }
            c if id_char(c) => {
                // A word: a `$` or `:` inside it does not start a parameter.
                while i < chars.len() && id_char(chars[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn named(pairs: &[(&str, Value)]) -> QueryParams {
        QueryParams::Named(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        )
    }

    fn names(sql: &str) -> Vec<(usize, Option<String>)> {
        scan(sql).into_iter().map(|s| (s.index, s.name)).collect()
    }

    #[test]
    fn numbers_parameters_as_sqlite_does() {
        assert_eq!(
            names("SELECT :a, @b, $c, :a, ?"),
            vec![
                (1, Some(":a".into())),
                (2, Some("@b".into())),
                (3, Some("$c".into())),
                (1, Some(":a".into())),
                (4, None),
            ]
        );
        // ?NNN sets the count; a later name takes the next number.
        assert_eq!(
            names("SELECT ?3, :x, ?"),
            vec![(3, None), (4, Some(":x".into())), (5, None)]
        );
    }

    #[test]
    fn skips_literals_identifiers_and_comments() {
        let sql = "SELECT ':no', \"@no\", `$no`, [:no], 'it''s :no' -- :no\n\
                   /* @no */ FROM t WHERE a = :yes AND b$c = 1";
        assert_eq!(names(sql), vec![(1, Some(":yes".into()))]);
        // An unterminated literal or comment swallows the rest, as SQLite
        // would refuse it anyway.
        assert!(names("SELECT 'abc :x").is_empty());
        assert!(names("SELECT /* :x").is_empty());
        assert_eq!(names("SELECT :été"), vec![(1, Some(":été".into()))]);
    }

    #[test]
    fn orders_named_values_by_first_appearance() {
        let p = named(&[("b", json!(2)), ("@a", json!(1)), ("$c", json!(3))]);
        let sql = "SELECT @a, :b, $c, :b";
        assert_eq!(p.bind(sql).unwrap(), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(named(&[]).bind("SELECT 1").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn ignores_keys_that_name_no_parameter() {
        // The original binding bound each key by name and skipped a name
        // the statement does not have; so does this.
        let p = named(&[("other", json!(0)), ("sid", json!(1)), ("@x", json!(2))]);
        assert_eq!(p.bind("SELECT :sid").unwrap(), vec![json!(1)]);
        assert_eq!(
            named(&[("unused", json!(1))]).bind("SELECT 1").unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn positional_values_pass_through() {
        let p = QueryParams::from(vec![json!(1), json!("x")]);
        assert_eq!(
            p.bind("SELECT ?, ?, :ignored").unwrap(),
            vec![json!(1), json!("x")]
        );
    }

    #[test]
    fn refuses_what_cannot_bind() {
        let err = |p: QueryParams, sql: &str| match p.bind(sql) {
            Err(TracingError::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(named(&[]), "SELECT :sid").contains(":sid"));
        assert!(err(named(&[("sid", json!(1))]), "SELECT :sid, ?").contains("positional"));
        assert!(err(
            named(&[("sid", json!(1)), (":sid", json!(2))]),
            "SELECT :sid"
        )
        .contains("more than one"));
        // A prefixed key fits only its own prefix.
        assert!(err(named(&[("@sid", json!(1))]), "SELECT :sid").contains(":sid"));
    }
}
