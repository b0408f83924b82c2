//! A token never shows: given apart or inside the URL, it appears in no
//! `Debug` output and no error, and a token inside the URL is sent as the
//! token, not as part of the URL.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trace_writer::*;

const SECRET: &str = "SECRETtoken123.abc_def";

/// A one-shot HTTP server: answers every request with 401 and hands back
/// the requests' heads.
fn refusing_server() -> (
    String,
    Arc<AtomicBool>,
    std::thread::JoinHandle<Vec<String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut heads = Vec::new();
        // The client may retry or open a second connection: serve a few.
        listener.set_nonblocking(true).expect("nonblocking accept");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline && !stopped.load(Ordering::Relaxed) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            stream.set_nonblocking(false).expect("blocking stream");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            while let Ok(n) = stream.read(&mut buf[got..]) {
                if n == 0 {
                    break;
                }
                got += n;
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]).into_owned();
            let head = head
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_string();
            heads.push(head);
            let body = "Unauthorized";
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        heads
    });
    (format!("http://{addr}"), stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_url_is_sent_as_the_token_and_never_shown() {
    let (base, stop, server) = refusing_server();
    let config = StorageConfig::file(format!("{base}?authToken={SECRET}"));
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!config.redacted_url().contains(SECRET));

    let err = BufferedTraceWriter::new(
        config.clone(),
        WriterConfig::default().open_timeout(Duration::from_secs(20)),
    )
    .await
    .expect_err("the server refuses every request");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SECRET), "{text}");
    let err = LibsqlTraceStorage::new(config)
        .await
        .expect_err("the server refuses every request");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SECRET), "{text}");

    stop.store(true, Ordering::Relaxed);
    let heads = server.join().expect("server");
    assert!(!heads.is_empty(), "no request reached the server");
    for head in &heads {
        let request_line = head.lines().next().unwrap_or_default();
        assert!(!request_line.contains(SECRET), "{request_line}");
        assert!(
            head.lines().any(
                |l| l.to_ascii_lowercase().starts_with("authorization: bearer ")
                    && l.ends_with(SECRET)
            ),
            "the token was not sent as the token: {head}"
        );
    }
}

#[tokio::test]
async fn a_bad_url_with_a_token_is_an_error_without_it() {
    for url in [
        format!("libsql://bad host name?authToken={SECRET}"),
        format!("https://user:{SECRET}@[::1?jwt={SECRET}"),
    ] {
        let config = StorageConfig::file(url.as_str());
        assert!(!format!("{config:?}").contains(SECRET));
        let err = BufferedTraceWriter::new(config.clone(), WriterConfig::default())
            .await
            .expect_err("a bad url");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(SECRET), "{url}: {text}");
    }
}

#[test]
fn a_token_given_apart_never_shows() {
    let config = StorageConfig::turso("libsql://db.example.io", SECRET);
    assert!(!format!("{config:?}").contains(SECRET));
    let mut config = StorageConfig::file(format!("libsql://db.example.io?jwt={SECRET}"));
    config.auth_token = Some(SECRET.to_string());
    assert!(!format!("{config:?}").contains(SECRET));
}
