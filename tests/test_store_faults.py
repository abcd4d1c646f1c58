"""Disk and database faults: one line that says what happened and what is safe, never a traceback.

Real faults, no mocks: an immutable folder (chattr +i as root, chmod otherwise) for
read-only, SQLite's own page limit for "disk full", a truncated file, and a damaged one.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from koboldtui.paths import app_paths
from koboldtui.store.db import (
    EMPTY_FILE_GRACE_S,
    MIGRATIONS,
    DatabaseError,
    open_database,
    statements,
)
from koboldtui.store.faults import explain


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable for real, also for root (immutable attribute)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "koboldtui.cli", *args], check=False, capture_output=True,
                          text=True, env=os.environ.copy(), timeout=60)


def test_a_read_only_data_folder_is_one_line_that_says_the_data_is_intact(kt_home: Path) -> None:
    paths = app_paths().ensure()
    open_database(paths.database).close()  # an existing installation
    before = paths.database.read_bytes()
    with read_only(paths.data_dir):
        done = _cli("instance", "add", "x", "--port", "5123")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "read-only" in lines[0] and "intact" in lines[0] and "delete" not in lines[0]
    assert paths.database.read_bytes() == before


def test_a_full_database_says_nothing_was_lost_and_not_to_delete(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("INSERT INTO settings VALUES ('k', ?)", ("x" * 100_000,))
    words = explain(caught.value, tmp_path / "k.sqlite3")
    assert words is not None and "disk is full" in words and "nothing saved before was lost" in words
    assert "do not delete" in words and "new one" not in words


def test_an_emptied_database_is_refused_not_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite3"
    path.write_bytes(b"")
    old = time.time() - EMPTY_FILE_GRACE_S - 5
    os.utime(path, (old, old))
    with pytest.raises(DatabaseError, match="is empty") as caught:
        open_database(path)
    assert "restore it from a backup" in str(caught.value)
    assert path.stat().st_size == 0  # untouched: not turned into a new database


def test_migrations_are_split_by_sqlite_not_by_semicolons() -> None:
    script = """
    CREATE TABLE t (a TEXT);
    INSERT INTO t VALUES ('semi;colon');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = a || ';'; END;
    """
    parts = list(statements(script))
    assert len(parts) == 3 and parts[2].endswith("END;")
    conn = sqlite3.connect(":memory:")
    for statement in parts:
        conn.execute(statement)
    conn.execute("INSERT INTO t VALUES ('x')")
    assert sorted(r[0] for r in conn.execute("SELECT a FROM t")) == ["semi;colon;", "x;"]
    assert list(statements(("SELECT 1", "  "))) == ["SELECT 1"]
    assert len(list(statements(MIGRATIONS[0]))) == 5  # the shipped schema: five tables


def test_a_bad_serve_key_in_config_toml_breaks_only_serve_with_a_clear_line(kt_home: Path) -> None:
    config = app_paths().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[serve]\nhandler = "x"\nport = "many"\n', encoding="utf-8")
    listed = _cli("ps")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    served = _cli("serve")
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert "[serve] handler is not a setting" in served.stderr
    assert "[serve] port = 'many' should be a whole number" in served.stderr
