//! A real sqld, started fresh for one test and killed when its guard drops.
//!
//! `TRACE_WRITER_SQLD` names the binary. Each [`Sqld`] gets a new temporary
//! data directory and a free loopback port, and is ready (its `/health`
//! answers 200) when `start` returns. Dropping the guard SIGKILLs the
//! server, also while a failing test unwinds.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::NEEDS_SQLD;

/// How long a start or restart may take before the test fails. Recovery
/// after a SIGKILL replays the server's WAL, so this is generous.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How many fresh ports a start tries: another process may take the free
/// port between our probe and sqld's bind.
const PORT_ATTEMPTS: usize = 3;
/// How long [`Sqld::commits`] waits for one row to commit.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);
/// How long a test's writers may make no progress before a [`Watchdog`]
/// probes the server. Healthy, they make progress within seconds of a
/// restart.
pub const WEDGE_STALL: Duration = Duration::from_secs(60);
/// A `flush_timeout` that outlasts a [`Watchdog`]'s restart of a wedged
/// server: [`WEDGE_STALL`], a probe and a restart after the last progress.
pub const FLUSH_PAST_A_WEDGE: Duration = Duration::from_secs(300);

/// Watches a count that grows while a test's writers make progress. After
/// [`WEDGE_STALL`] without growth it calls [`Sqld::restart_if_wedged`]:
/// a wedged server is restarted, and stuck writers fail the test.
pub struct Watchdog {
    seen: u64,
    since: Instant,
}

impl Watchdog {
    /// Starts watching from the count `seen`.
    pub fn new(seen: u64) -> Self {
        Watchdog {
            seen,
            since: Instant::now(),
        }
    }

    /// Takes the count now; `what` names the run in a message.
    pub async fn check(&mut self, progress: u64, server: &mut Sqld, what: &str) {
        if progress != self.seen {
            self.seen = progress;
            self.since = Instant::now();
        } else if self.since.elapsed() > WEDGE_STALL {
            let stalled = format!("{what}: no progress for {WEDGE_STALL:?}");
            server.restart_if_wedged(&stalled).await;
            self.since = Instant::now();
        }
    }
}

/// The sqld binary named by `TRACE_WRITER_SQLD`; panics with [`NEEDS_SQLD`]
/// when it is unset, so a run with `--ignored` never passes silently.
pub fn binary() -> PathBuf {
    match std::env::var_os("TRACE_WRITER_SQLD") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "TRACE_WRITER_SQLD={} is not a file; {NEEDS_SQLD}",
                path.display()
            );
            path
        }
        _ => panic!("{NEEDS_SQLD}"),
    }
}

/// A running sqld. Dropping it kills the server (SIGKILL) and removes its
/// data directory.
#[must_use = "dropping the guard kills the server"]
#[derive(Debug)]
pub struct Sqld {
    bin: PathBuf,
    /// Holds the database and the server's log; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    jwt_key: Option<PathBuf>,
    child: Option<Child>,
    /// Starts so far, to give each its own log file.
    starts: usize,
    /// Restarts of a wedged server (see [`Sqld::restart_if_wedged`]).
    wedged_restarts: usize,
}

impl Sqld {
    /// Starts a fresh server without auth.
    pub async fn start() -> Sqld {
        Self::start_inner(None).await
    }

    /// Starts a fresh server that wants a JWT signed by the Ed25519 key
    /// whose public half is `public_key` (raw 32 bytes, URL-safe base64
    /// without padding, or a PEM `PUBLIC KEY`).
    pub async fn start_with_jwt_key(public_key: &str) -> Sqld {
        Self::start_inner(Some(public_key)).await
    }

    async fn start_inner(public_key: Option<&str>) -> Sqld {
        let bin = binary();
        let dir = tempfile::Builder::new()
            .prefix("trace-writer-sqld-")
            .tempdir()
            .expect("create the server's temp dir");
        let jwt_key = public_key.map(|key| {
            let path = dir.path().join("jwt.key");
            // sqld refuses a raw key with a trailing newline.
            let mut f = std::fs::File::create(&path).expect("write the jwt key file");
            f.write_all(key.as_bytes()).expect("write the jwt key file");
            path
        });
        let mut server = Sqld {
            bin,
            dir,
            port: 0,
            jwt_key,
            child: None,
            starts: 0,
            wedged_restarts: 0,
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(why) => {
                    server.kill();
                    last = why;
                }
            }
        }
        panic!("sqld did not start after {PORT_ATTEMPTS} attempts: {last}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback address the server listens on (for a proxy).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The data directory, `DIR/data.sqld`.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data.sqld")
    }

    /// Whether the server process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL and reaps it. Does nothing if it is
    /// not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix: no clean shutdown.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and port, and
    /// waits until it is ready. Kills it first if it is still running.
    pub async fn restart(&mut self) {
        self.kill();
        // The port was ours a moment ago; a brief retry covers a socket the
        // kernel has not released yet.
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(why) => {
                    self.kill();
                    last = why;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        panic!("sqld did not restart on port {}: {last}", self.port);
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("sqld-{start}.log"))
    }

    /// Spawns sqld and waits for `/health`, or for the process to exit, or
    /// for the deadline. The error carries the tail of the server's log.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self.log_path(self.starts);
        let out = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--db-path")
            .arg(self.db_path())
            .arg("--http-listen-addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--no-welcome")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(key) = &self.jwt_key {
            cmd.arg("--auth-jwt-key-file").arg(key);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "sqld exited with {status} before it was ready; log:\n{}",
                        tail(&log)
                    ));
                }
            }
            if health(self.port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sqld was not ready within {READY_DEADLINE:?}; log:\n{}",
                    tail(&log)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends the server `signal` (`"STOP"`, `"CONT"`) with `kill(1)`: a
    /// stopped server accepts connections and answers nothing.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// Whether the server commits a row within [`PROBE_DEADLINE`], through
    /// a connection of its own: `Ok(false)` if the probe timed out, and the
    /// error if it failed otherwise.
    pub async fn commits(&self) -> Result<bool, String> {
        use trace_writer::TraceStorage;
        let url = self.url();
        let probe = async {
            let config = trace_writer::StorageConfig::turso(url, "");
            let s = trace_writer::LibsqlTraceStorage::new(config).await?;
            s.query("CREATE TABLE IF NOT EXISTS wedge_probe (x)", vec![])
                .await?;
            s.query("INSERT INTO wedge_probe VALUES (1)", vec![])
                .await?;
            s.close().await
        };
        match tokio::time::timeout(PROBE_DEADLINE, probe).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Ok(false),
        }
    }

    /// For a test whose writers made no progress for a while (`what` says
    /// how long): if a write to the server hangs, the server is wedged, and
    /// it is restarted, as an operator would, which stderr says (and
    /// [`Sqld::wedged_restarts`] counts). If the server commits, the
    /// writers are stuck, not the server, and the test fails; so it does if
    /// the probe fails otherwise.
    ///
    /// sqld 0.24.33 was seen to wedge after a restart: every write hung,
    /// also from a fresh connection after every client was gone, while its
    /// write-lock manager spun and reads were answered (docs/remote.md).
    pub async fn restart_if_wedged(&mut self, what: &str) {
        match self.commits().await {
            Ok(true) => panic!("{what}, yet the server commits: the writers are stuck"),
            Ok(false) => {
                eprintln!("{what}, and a write to the server hangs: sqld is wedged; restarting it");
                self.wedged_restarts += 1;
                self.restart().await;
            }
            Err(e) => panic!("{what}, and the probe of the server failed: {e}"),
        }
    }

    /// How many times [`Sqld::restart_if_wedged`] restarted the server.
    pub fn wedged_restarts(&self) -> usize {
        self.wedged_restarts
    }

    /// The server's log of its latest start (for a failure message).
    pub fn log(&self) -> String {
        tail(&self.log_path(self.starts))
    }
}

impl Drop for Sqld {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port no one listens on now. The listener is dropped at once, so sqld
/// can bind it; `start` retries with another if someone else was quicker.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// One `GET /health` over a raw TCP stream: true on a 200.
async fn health(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream
            .write_all(
                format!(
                    "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        // The status line is all we need.
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        Ok::<bool, std::io::Error>(
            line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"),
        )
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

/// The last 4 KiB of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = text.len().saturating_sub(4096);
    String::from_utf8_lossy(&text[from..]).into_owned()
}
