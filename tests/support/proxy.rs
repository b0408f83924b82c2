//! A loopback TCP proxy in front of the server: a fixed delay in each
//! direction, a count of the TCP connections it accepted, and cuts on
//! demand.
//!
//! The delay is a pipe's latency, not a throttle: each chunk is stamped when
//! it is read and written out half a round trip later, so chunks in flight
//! overlap and throughput is not limited. Tokio's timers tick in whole
//! milliseconds, so a delayed chunk may wait up to 1 ms longer; with no
//! delay set, chunks are written at once.
//!
//! It runs on a thread and runtime of its own, as a network would: a test
//! whose producers keep its runtime's workers busy does not delay the
//! proxy's timers, which would add latency the round trip does not name.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a doomed connection waits for the server's reply before it is
/// cut anyway (the reply is what proves the server applied the request).
const DOOMED_FALLBACK: Duration = Duration::from_secs(10);

/// A running proxy. Dropping it stops accepting and cuts every connection.
#[must_use = "dropping the proxy stops it"]
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// The proxy's own runtime; dropping it (off any runtime's thread, see
    /// `Drop`) ends every connection.
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// Half the round trip, in nanoseconds; read per chunk, so a change
    /// applies to connections already open.
    one_way_nanos: AtomicU64,
    accepted: AtomicU64,
    /// Bumped by `cut_all`; every connection watches it.
    cut: watch::Sender<u64>,
    /// Armed by `cut_after_request_containing`; the first client chunk that
    /// contains it takes it, so it fires once.
    pattern: Mutex<Option<Vec<u8>>>,
    pattern_hits: AtomicU64,
    pattern_cuts: AtomicU64,
    /// Set by `cut_clients_only`: a cut leaves the server's side open and
    /// reads it to its end, as a load balancer in front of a server may.
    keep_upstream: std::sync::atomic::AtomicBool,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`, adding
    /// `round_trip` / 2 in each direction.
    pub async fn start(upstream: SocketAddr, round_trip: Duration) -> Proxy {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            one_way_nanos: AtomicU64::new((round_trip / 2).as_nanos() as u64),
            accepted: AtomicU64::new(0),
            cut: watch::channel(0).0,
            pattern: Mutex::new(None),
            pattern_hits: AtomicU64::new(0),
            pattern_cuts: AtomicU64::new(0),
            keep_upstream: std::sync::atomic::AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latency-proxy")
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let accept = runtime.spawn({
            let shared = shared.clone();
            async move {
                // Registered with the proxy's own reactor.
                let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                accept_loop(listener, shared).await
            }
        });
        Proxy {
            addr,
            shared,
            accept,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(SeqCst)
    }

    /// Sets the added round trip (half of it each way).
    pub fn set_round_trip(&self, round_trip: Duration) {
        self.shared
            .one_way_nanos
            .store((round_trip / 2).as_nanos() as u64, SeqCst);
    }

    /// Cuts every open connection now (the client sees a reset).
    pub fn cut_all(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Cuts every client connection now, but leaves each server connection
    /// open, its reply read and thrown away: the server goes on with a
    /// request in progress, and may commit it after the client gave up, as
    /// behind a load balancer that does not pass the close on.
    pub fn cut_clients_only(&self) {
        self.shared.keep_upstream.store(true, SeqCst);
        self.cut_all();
    }

    /// Arms a one-shot cut: the first client-to-server chunk that contains
    /// `pattern` is forwarded, and its connection is cut as soon as the
    /// server starts to reply, before any of the reply is relayed. The
    /// server has then applied the request, and the client cannot know.
    pub fn cut_after_request_containing(&self, pattern: &str) {
        assert!(!pattern.is_empty());
        *self.shared.pattern.lock().unwrap() = Some(pattern.as_bytes().to_vec());
    }

    /// Whether an armed pattern is still waiting for its request.
    pub fn armed(&self) -> bool {
        self.shared.pattern.lock().unwrap().is_some()
    }

    /// Requests that matched an armed pattern.
    pub fn pattern_hits(&self) -> u64 {
        self.shared.pattern_hits.load(SeqCst)
    }

    /// Connections cut because they matched a pattern and the server replied
    /// (or did not within a while).
    pub fn pattern_cuts(&self) -> u64 {
        self.shared.pattern_cuts.load(SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
        // Without waiting: a proxy is often dropped on a runtime's thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, SeqCst);
        tokio::spawn(serve(client, shared.clone()));
    }
}

/// How a connection ended.
enum End {
    /// Both directions closed on their own.
    Closed,
    /// `cut_all`.
    Cut,
    /// The pattern's request was forwarded and the reply withheld.
    PatternCut,
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    // Subscribed before anything else, so a `cut_all` from now on reaches
    // this connection.
    let mut cut = shared.cut.subscribe();
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (doom_tx, doom_rx) = watch::channel(false);
    let mut doom_wait = doom_rx.clone();
    let end = {
        // Borrowed halves: once this block ends, the streams are ours again
        // to reset.
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(cr, sw, &shared, Side::Up(doom_tx));
        let down = pump(sr, cw, &shared, Side::Down(doom_rx));
        tokio::select! {
            // The first early stop ends both directions.
            done = async { tokio::try_join!(up, down) } => match done {
                Err(Stop::Doomed) => End::PatternCut,
                _ => End::Closed,
            },
            _ = cut.changed() => End::Cut,
            _ = async {
                // An error means the client side closed undoomed: no cut.
                if doom_wait.wait_for(|d| *d).await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(DOOMED_FALLBACK).await;
            } => End::PatternCut,
        }
    };
    match end {
        End::Closed => {}
        End::Cut => {
            let _ = client.set_zero_linger();
            if shared.keep_upstream.load(SeqCst) {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = server.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        }
        End::PatternCut => {
            shared.pattern_cuts.fetch_add(1, SeqCst);
            let _ = client.set_zero_linger();
        }
    }
}

/// Which way a pump runs, and its part in a pattern cut.
enum Side {
    /// Client to server: watches for the armed pattern and dooms the
    /// connection when it passes.
    Up(watch::Sender<bool>),
    /// Server to client: stops, relaying nothing, once the connection is
    /// doomed and the server replies.
    Down(watch::Receiver<bool>),
}

enum Stop {
    Io,
    Doomed,
}

/// Copies `from` to `to`, each chunk delayed by the one-way delay. Ends
/// with `Ok` when `from` closes (after passing the close on), or with the
/// reason it stopped early.
async fn pump<R, W>(mut from: R, mut to: W, shared: &Shared, side: Side) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    // Owns the sender: when the reader ends, the writer drains the chunks
    // still in flight and then passes the close on.
    let read = async move {
        let mut buf = vec![0u8; 64 << 10];
        // The end of the previous chunk, so a pattern split across two
        // reads is still found.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = from.read(&mut buf).await.map_err(|_| Stop::Io)?;
            if n == 0 {
                return Ok(());
            }
            let chunk = buf[..n].to_vec();
            match &side {
                Side::Up(doom) => {
                    let mut armed = shared.pattern.lock().unwrap();
                    if let Some(pattern) = armed.as_ref() {
                        carry.extend_from_slice(&chunk);
                        if carry.windows(pattern.len()).any(|w| w == &pattern[..]) {
                            // Doomed before the chunk is even queued: any
                            // byte the server sends from now on answers it.
                            *armed = None;
                            shared.pattern_hits.fetch_add(1, SeqCst);
                            let _ = doom.send(true);
                            carry.clear();
                        } else {
                            let keep = pattern.len().saturating_sub(1);
                            let from = carry.len().saturating_sub(keep);
                            carry.drain(..from);
                        }
                    }
                }
                Side::Down(doom) => {
                    if *doom.borrow() {
                        return Err(Stop::Doomed);
                    }
                }
            }
            let one_way = Duration::from_nanos(shared.one_way_nanos.load(SeqCst));
            if tx.send((Instant::now() + one_way, chunk)).is_err() {
                return Err(Stop::Io);
            }
        }
    };
    let write = async {
        while let Some((due, chunk)) = rx.recv().await {
            // A timer rounds up to the next millisecond tick: with no delay
            // left, write at once.
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            to.write_all(&chunk).await.map_err(|_| Stop::Io)?;
        }
        let _ = to.shutdown().await;
        Ok::<(), Stop>(())
    };
    let (r, w) = tokio::join!(read, write);
    r.and(w)
}
