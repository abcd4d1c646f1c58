"""Disk and database faults: one line that says what happened and what is safe, never a traceback.

Real faults, no mocks: an immutable folder (chattr +i as root, chmod otherwise) for
read-only, SQLite's own page limit for "disk full", a truncated file, and a damaged one.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from koboldtui.paths import app_paths
from koboldtui.store.db import (
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
    with pytest.raises(DatabaseError, match="is empty") as caught:
        open_database(path)
    assert "restore it from a backup" in str(caught.value)
    assert path.stat().st_size == 0  # untouched: not turned into a new database


def test_a_just_emptied_database_is_refused_by_the_cli_at_once(kt_home: Path) -> None:
    """Issue 20: within 10 s of being emptied, a command used to recreate it empty (instances gone)."""
    assert _cli("instance", "add", "x", "--port", "5123").returncode == 0
    database = app_paths().database
    database.write_bytes(b"")  # emptied a moment ago (mtime: now)
    for path in database.parent.glob(database.name + "-*"):
        path.unlink()
    done = _cli("ps")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "is empty (0 bytes)" in done.stderr and "restore it from a backup" in done.stderr
    assert database.stat().st_size == 0


def test_a_new_database_is_never_seen_empty(tmp_path: Path) -> None:
    """Fresh creates still work, from several processes at once, and no opener ever sees 0 bytes."""
    path = tmp_path / "k.sqlite3"
    code = ("import sys; from koboldtui.store.db import open_database, schema_version; "
            "print(schema_version(open_database(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(out.strip() == str(len(MIGRATIONS)) for out, _ in outs), outs
    assert path.stat().st_size > 0
    assert not list(tmp_path.glob(".k.sqlite3.*"))  # no temp file left behind


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


def _secrets_file() -> Path:
    path = app_paths().secrets_file
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize(("content", "words"), [
    (b'[instances.x]\napi_key = "\xff\xfe"\n', "is not UTF-8 text"),
    (b"instances = 5\n", "has the wrong shape: `instances` is int"),
])
def test_a_bad_secrets_file_is_one_line_in_every_command(kt_home: Path, content: bytes, words: str) -> None:
    assert _cli("instance", "add", "x", "--port", "5123").returncode == 0
    _secrets_file().write_bytes(content)
    commands = [("ps",), ("instance", "edit", "x", "--port", "5124"), ("start", "x"), ("horde", "status", "x")]
    for command in commands if words.startswith("is not") else commands[::3]:
        done = _cli(*command)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode != 0 and "Traceback" not in done.stderr, (command, done.stderr)
        assert len(lines) == 1 and words in lines[0] and "secrets.toml.bad" in lines[0], (command, done.stderr)


@contextmanager
def tiny_disk(where: Path) -> Iterator[Path]:
    """A real 512 KiB file system (tmpfs; needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_says_the_disk_is_full_not_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        monkeypatch.setenv("KOBOLDTUI_HOME", str(disk / "home"))
        assert _cli("instance", "add", "x", "--port", "5123").returncode == 0
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill it to the last byte
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        for command in (("ps",), ("instance", "add", "y", "--port", "5125"), ("horde", "status", "x")):
            done = _cli(*command)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode != 0 and len(lines) == 1, (command, done.stderr)
            assert "the disk is full" in lines[0] and "do not delete the database" in lines[0], lines[0]
            assert "damaged" not in lines[0] and ".recover" not in lines[0]
        filler.unlink()
        ok = sqlite3.connect(disk / "home" / "data" / "koboldtui.sqlite3").execute("PRAGMA integrity_check")
        assert ok.fetchone()[0] == "ok"
        listed = _cli("ps")
        assert listed.returncode == 0 and "x" in listed.stdout  # nothing was lost
