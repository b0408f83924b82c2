//! A small Hrana-over-HTTP client for whole batches: one `POST /v3/pipeline`
//! request carries a batch's statements, so a batch costs one round trip
//! however large it is.
//!
//! libsql's remote connection sends each statement as its own request (and
//! often on a new TCP connection). This client keeps its connections alive
//! (hyper's pool) and sends a Hrana `batch` whose steps are conditioned on
//! each other, so the server runs `BEGIN`, the statements and `COMMIT` (or
//! `ROLLBACK`) in one go. The protocol is the server's `HTTP_V2_SPEC.md`
//! (the v3 endpoint takes the same JSON) with the `Batch`, `Stmt`, `Value`
//! and `Error` structures of Hrana 3, whose `is_autocommit` condition keeps
//! a batch's statements inside its transaction.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Uri};
use hyper::body::Bytes;
use hyper::client::HttpConnector;
use hyper_rustls::HttpsConnector;
use libsql::Value;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::db::url::redact;
use crate::error::{classify_remote_error, DbError, ErrorClass};

/// Longest a pipeline request may take before it counts as a dropped
/// connection (transient; whether it was applied is checked before the
/// retry).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an idle kept-alive connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// One statement of a batch.
#[derive(Debug, Serialize)]
pub(crate) struct Step<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) condition: Option<Cond>,
    pub(crate) stmt: Stmt<'a>,
}

/// A statement and its positional arguments.
#[derive(Debug, Serialize)]
pub(crate) struct Stmt<'a> {
    pub(crate) sql: Arc<str>,
    pub(crate) args: Vec<Arg<'a>>,
    pub(crate) want_rows: bool,
}

impl<'a> Step<'a> {
    /// A step that runs whatever the steps before it did.
    pub(crate) fn always(stmt: Stmt<'a>) -> Self {
        Step {
            condition: None,
            stmt,
        }
    }
}

impl<'a> Stmt<'a> {
    /// A statement whose rows are wanted.
    pub(crate) fn query(sql: impl Into<Arc<str>>, args: Vec<Arg<'a>>) -> Self {
        Stmt {
            sql: sql.into(),
            args,
            want_rows: true,
        }
    }

    /// The arguments as values, to bind on a local connection.
    pub(crate) fn values(&self) -> Vec<Value> {
        self.args.iter().map(|a| a.0.clone().into_owned()).collect()
    }
}

/// A value bound to a statement, in Hrana's JSON form. Borrowed from the
/// queued operation where it can be: encoding a batch copies no row.
#[derive(Debug)]
pub(crate) struct Arg<'a>(pub(crate) Cow<'a, Value>);

impl<'a> Arg<'a> {
    pub(crate) fn of(v: &'a Value) -> Self {
        Arg(Cow::Borrowed(v))
    }

    pub(crate) fn owned(v: Value) -> Self {
        Arg(Cow::Owned(v))
    }
}

impl Serialize for Arg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match &*self.0 {
            Value::Null => m.serialize_entry("type", "null")?,
            Value::Integer(i) => {
                // A string: JSON numbers may not hold 64 bits.
                m.serialize_entry("type", "integer")?;
                m.serialize_entry("value", &i.to_string())?;
            }
            Value::Real(f) => {
                m.serialize_entry("type", "float")?;
                m.serialize_entry("value", f)?;
            }
            Value::Text(t) => {
                m.serialize_entry("type", "text")?;
                m.serialize_entry("value", t)?;
            }
            Value::Blob(b) => {
                m.serialize_entry("type", "blob")?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
                )?;
            }
        }
        m.end()
    }
}

/// When a step runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Cond {
    /// The step ran and succeeded.
    Ok {
        step: u32,
    },
    Not {
        cond: Box<Cond>,
    },
    And {
        conds: Vec<Cond>,
    },
    /// The stream is in autocommit mode (no transaction open). Hrana 3.
    IsAutocommit,
}

#[derive(Serialize)]
struct Pipeline<'a> {
    baton: Option<&'a str>,
    requests: (BatchReq<'a>, CloseReq),
}

#[derive(Serialize)]
struct BatchReq<'a> {
    r#type: &'static str,
    batch: BatchBody<'a>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    steps: &'a [Step<'a>],
}

#[derive(Serialize)]
struct CloseReq {
    r#type: &'static str,
}

#[derive(Deserialize)]
struct PipelineResp {
    results: Vec<StreamResult>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamResult {
    Ok { response: StreamResp },
    Error { error: ProtoError },
}

#[derive(Deserialize)]
struct StreamResp {
    #[serde(default)]
    result: Option<BatchResult>,
}

/// The result of each step: `None` in both for a skipped step.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchResult {
    pub(crate) step_results: Vec<Option<StepResult>>,
    pub(crate) step_errors: Vec<Option<ProtoError>>,
}

/// What a step that ran returned.
#[derive(Debug, Deserialize)]
pub(crate) struct StepResult {
    #[serde(default)]
    pub(crate) rows: Vec<Vec<serde_json::Value>>,
}

/// A server error: its message and (server-specific) code.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ProtoError {
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) code: Option<String>,
}

impl ProtoError {
    /// The error, classed by its code.
    pub(crate) fn to_db_error(&self) -> DbError {
        DbError::new(
            classify_remote_error(self.code.as_deref(), &self.message),
            match &self.code {
                Some(code) => format!("{} ({code})", self.message),
                None => self.message.clone(),
            },
        )
    }
}

/// The client: a pooled HTTP connection to one server.
pub(crate) struct HranaClient {
    client: hyper::Client<HttpsConnector<HttpConnector>, hyper::Body>,
    pipeline: Uri,
    /// `Bearer <token>`, marked sensitive so that no log shows it.
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for HranaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HranaClient")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl HranaClient {
    /// A client for the server at `url` (`libsql://`, `http(s)://`,
    /// `ws(s)://`; Hrana over HTTP is used in every case).
    ///
    /// # Errors
    /// `Fatal` for a URL or token that cannot be used.
    pub(crate) fn new(url: &str, token: Option<&str>) -> Result<Self, DbError> {
        let bad = |m: String| DbError::new(ErrorClass::Fatal, m);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad(format!("not a server url: {}", redact(url))))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => "http",
            _ => "https",
        };
        let base = rest.split(['?', '#']).next().unwrap_or(rest);
        let pipeline: Uri = format!("{scheme}://{}/v3/pipeline", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| bad(format!("bad server url {}: {e}", redact(url))))?;
        let auth = match token.filter(|t| !t.is_empty()) {
            Some(t) => {
                let mut v = HeaderValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| bad("the auth token is not a valid header value".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| bad(format!("cannot load the TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper::Client::builder()
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Ok(Self {
            client,
            pipeline,
            auth,
        })
    }

    /// Runs `steps` as one Hrana batch on a new stream, closed in the same
    /// request: [`encode`] then [`HranaClient::send`].
    ///
    /// # Errors
    /// As [`HranaClient::send`].
    pub(crate) async fn batch(&self, steps: &[Step<'_>]) -> Result<BatchResult, DbError> {
        self.send(encode(steps)?).await
    }

    /// Sends a request body made by [`encode`] and reads the batch's result.
    /// The body is shared, not copied, so a request can be sent again.
    ///
    /// # Errors
    /// A transport error, a timeout or an HTTP error status, classed (a
    /// dropped or refused connection is transient). Errors of single steps
    /// are in the result, not here.
    pub(crate) async fn send(&self, body: Bytes) -> Result<BatchResult, DbError> {
        let mut req = hyper::Request::post(self.pipeline.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(hyper::Body::from(body))
            .map_err(|e| DbError::new(ErrorClass::Fatal, format!("building a request: {e}")))?;
        if let Some(auth) = &self.auth {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            DbError::new(ErrorClass::Transient, format!("{what}: {e}"))
        };
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transient("http error", &e))?;
            let status = resp.status();
            let bytes = hyper::body::to_bytes(resp.into_body())
                .await
                .map_err(|e| transient("http error reading the reply", &e))?;
            Ok::<_, DbError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| transient("no reply", &format!("after {REQUEST_TIMEOUT:?}")))??;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let class = match status.as_u16() {
                408 | 429 | 500..=599 => ErrorClass::Transient,
                _ => classify_remote_error(None, &text),
            };
            return Err(DbError::new(
                class,
                format!("server answered {status}: {}", text.trim()),
            ));
        }
        let resp: PipelineResp = serde_json::from_slice(&bytes).map_err(|e| {
            DbError::new(
                ErrorClass::Transient,
                format!("unreadable reply from the server: {e}"),
            )
        })?;
        match resp.results.into_iter().next() {
            Some(StreamResult::Ok {
                response: StreamResp {
                    result: Some(result),
                },
            }) => Ok(result),
            Some(StreamResult::Error { error }) => Err(error.to_db_error()),
            _ => Err(DbError::new(
                ErrorClass::Transient,
                "the server's reply has no batch result",
            )),
        }
    }
}

/// The body of a pipeline request that runs `steps` as one Hrana batch on a
/// new stream and closes it.
///
/// # Errors
/// `Fatal` if the steps cannot be encoded (never for values from an `Op`).
pub(crate) fn encode(steps: &[Step<'_>]) -> Result<Bytes, DbError> {
    serde_json::to_vec(&Pipeline {
        baton: None,
        requests: (
            BatchReq {
                r#type: "batch",
                batch: BatchBody { steps },
            },
            CloseReq { r#type: "close" },
        ),
    })
    .map(Bytes::from)
    .map_err(|e| DbError::new(ErrorClass::Fatal, format!("encoding a batch: {e}")))
}

/// A Hrana text value.
pub(crate) fn hrana_text(v: &serde_json::Value) -> Option<String> {
    (v.get("type")?.as_str()? == "text")
        .then(|| v.get("value")?.as_str().map(str::to_string))
        .flatten()
}

/// A Hrana integer value (sent as a string).
pub(crate) fn hrana_integer(v: &serde_json::Value) -> Option<i64> {
    match v.get("value")? {
        serde_json::Value::String(s) => s.parse().ok(),
        n => n.as_i64(),
    }
}
