//! The database layer both backends stand on.
//!
//! - [`open`](open::open): opening a database and its pragmas.
//! - [`tx`]: [`transaction`](tx::transaction), the one helper that opens and
//!   ends transactions. No other code writes `BEGIN`, `COMMIT` or `ROLLBACK`.
//!   On a remote server, [`RemoteTx`](tx::RemoteTx) lays a transaction out
//!   as one request.
//! - [`columns`]: [`Table`](columns::Table) and each table's columns, defined
//!   once; the `INSERT` SQL, bind order, multi-row form and decoders derive
//!   from them.
//! - [`op`]: [`Op`](op::Op), a row validated and serialized by the producer;
//!   [`json`] writes its JSON columns.
//! - [`exec`]: [`Executor`](exec::Executor), the one place that writes rows
//!   (locally through prepared statements, remotely through the encoder).
//! - [`read`]: decoding rows, `get_session`, step loads and `query`.
//! - [`lease`]: the statements of the id lease the writer numbers its rows
//!   from, run by [`Executor::lease_blocks`](exec::Executor::lease_blocks).
//! - [`params`]: [`QueryParams`](params::QueryParams), named query
//!   parameters ordered into the positional list the trait binds.
//! - [`checkpoint`]: the second connection the writer checkpoints the WAL
//!   on, and the checkpoint pragma.
//! - [`hrana`]: a Hrana-over-HTTP client that sends a whole batch to a remote
//!   server in one request.
//!
//! Every function returns [`DbError`](crate::error::DbError), whose class
//! (transient, this operation's fault, fatal) is a value, decided once from
//! the SQLite result code.

pub(crate) mod checkpoint;
pub(crate) mod columns;
pub(crate) mod exec;
pub(crate) mod foreign;
pub(crate) mod hrana;
pub(crate) mod json;
pub(crate) mod lease;
pub(crate) mod op;
pub(crate) mod open;
pub(crate) mod params;
pub(crate) mod read;
pub(crate) mod tx;
pub(crate) mod url;

pub(crate) use columns::Table;
pub(crate) use exec::Executor;
pub(crate) use op::Op;
pub(crate) use open::{open, open_watched, Opened};
pub(crate) use tx::transaction;
