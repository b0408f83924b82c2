"""A second SQLite library in the process (the stdlib's ``sqlite3``) with
the database open: POSIX locks are per process, so SQLite's locking cannot
keep it apart from the writer. The crate finds it through /proc/self/fd
(Linux) and the next call raises a RuntimeWarning, once per file."""

import sqlite3
import sys
import time
import warnings

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="found through /proc/self/fd: Linux only",
)


def test_stdlib_sqlite3_on_the_same_file_raises_a_runtime_warning(cls, tmp_path):
    path = tmp_path / "t.db"
    with cls.file(path) as s:
        s.ensure_session("s")
        s.flush()
        with warnings.catch_warnings():
            # Nothing to report yet: any warning fails here.
            warnings.simplefilter("error")
            s.ensure_session("s")
            s.flush()
        reader = sqlite3.connect(path)
        try:
            reader.execute("SELECT count(*) FROM session_traces").fetchone()
            seen = []
            deadline = time.monotonic() + 30
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # The writer looks at most once a second while it writes.
                while time.monotonic() < deadline:
                    s.ensure_session("s")
                    s.flush()
                    seen = [w for w in caught if issubclass(w.category, RuntimeWarning)]
                    if len(seen) >= 2:
                        break
                    time.sleep(0.1)
            texts = [str(w.message) for w in seen]
            assert len(texts) == 2, texts  # the database and its -wal
            assert all("another SQLite library" in t for t in texts), texts
            assert any(f"{path}-wal" in t for t in texts), texts
            # Once per file: later calls are quiet.
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                time.sleep(1.1)
                s.ensure_session("s")
                s.flush()
                s.ensure_session("s")
        finally:
            reader.close()
