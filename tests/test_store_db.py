"""The SQLite store opens the same way everywhere and upgrades itself; settings survive restarts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from koboldtui.paths import app_paths
from koboldtui.store.db import (
    MIGRATIONS,
    DatabaseError,
    default_database,
    open_database,
    schema_version,
    transaction,
)
from koboldtui.store.settings import Settings, delete_setting, get_setting, set_setting

EXPECTED_COLUMNS = {
    "gpus": ["uuid", "priority", "enabled", "name", "present", "last_seen"],
    "instances": ["name", "spec", "created_at", "updated_at"],
    "launches": ["name", "pid", "port", "token", "started_at", "log_path"],
    "settings": ["key", "value"],
    "horde_history": [
        "id",
        "instance",
        "job_id",
        "state",
        "kudos",
        "tokens",
        "seconds",
        "finished_at",
    ],
}


def test_new_file_gets_every_table_of_migration_1(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "sub" / "k.sqlite3")
    for table, columns in EXPECTED_COLUMNS.items():
        got = [row["name"] for row in conn.execute(f"PRAGMA table_info({table})")]
        assert got == columns, table
    assert schema_version(conn) == len(MIGRATIONS) >= 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_reopening_keeps_data_and_does_not_reapply(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite3"
    conn = open_database(path)
    set_setting(conn, "theme", "gruvbox")
    conn.close()
    conn = open_database(path)
    assert get_setting(conn, "theme") == "gruvbox"
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_launch_rows_go_with_their_instance(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    conn.execute("INSERT INTO instances VALUES ('a', '{}', 1, 1)")
    conn.execute("INSERT INTO launches (name, pid, port) VALUES ('a', 42, 5001)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO launches (name, pid) VALUES ('ghost', 1)")
    conn.execute("DELETE FROM instances WHERE name = 'a'")
    assert conn.execute("SELECT COUNT(*) FROM launches").fetchone()[0] == 0


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    with pytest.raises(RuntimeError), transaction(conn):
        set_setting(conn, "a", 1)
        raise RuntimeError("boom")
    assert get_setting(conn, "a") is None
    with transaction(conn):
        set_setting(conn, "a", 1)
        set_setting(conn, "b", 2)
    other = open_database(tmp_path / "k.sqlite3")  # another connection sees committed data
    assert (get_setting(other, "a"), get_setting(other, "b")) == (1, 2)


def test_a_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite3"
    open_database(path).execute("INSERT INTO schema_version VALUES (999, 0)")
    with pytest.raises(DatabaseError, match="upgrade koboldtui"):
        open_database(path)


def test_a_damaged_file_is_left_untouched_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="looks damaged") as caught:
        open_database(path)
    assert "left it untouched" in str(caught.value) and "delete" not in str(caught.value)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite3"
    code = (
        "import sys; from koboldtui.store.db import open_database, schema_version;"
        "c = open_database(sys.argv[1]); print(schema_version(c))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    assert {out.strip() for out, _ in results} == {str(len(MIGRATIONS))}
    conn = open_database(path)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_default_database_lives_in_koboldtui_home(kt_home: Path) -> None:
    conn = default_database()
    set_setting(conn, "x", [1, 2])
    conn.close()
    assert app_paths().database.exists()
    assert str(app_paths().database).startswith(str(kt_home))


def test_settings_round_trip_json_values(tmp_path: Path) -> None:
    settings = Settings(open_database(tmp_path / "k.sqlite3"))
    assert settings.get("theme", "textual-dark") == "textual-dark"
    settings.set("theme", "nord")
    settings.set("model_dirs", ["/a", "/b"])
    settings.set("window", {"w": 80, "ratio": 0.5, "on": True})
    settings.set("theme", "dracula")  # overwrite
    assert settings.get("theme") == "dracula"
    assert settings.get("model_dirs") == ["/a", "/b"]
    assert settings.get("window") == {"w": 80, "ratio": 0.5, "on": True}
    settings.delete("theme")
    assert settings.get("theme", "default") == "default"


def test_unreadable_setting_falls_back_to_default(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    conn.execute("INSERT INTO settings VALUES ('bad', '{not json')")
    assert get_setting(conn, "bad", "fallback") == "fallback"
    delete_setting(conn, "bad")
    assert conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0] == 0


def test_settings_commit_on_a_default_isolation_connection(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite3"
    open_database(path).close()
    plain = sqlite3.connect(path)  # someone else's connection style
    set_setting(plain, "k", 5)
    assert get_setting(open_database(path), "k") == 5


def test_threads_sharing_one_connection_never_interleave_transactions(tmp_path: Path) -> None:
    """The panel's threads share one connection: concurrent transactions must serialize."""
    import threading

    from koboldtui.store.db import open_database, transaction

    conn = open_database(tmp_path / "shared.sqlite3")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(150):
                with transaction(conn):
                    conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (f"k{n}", str(i)))
                    conn.execute("SELECT COUNT(*) FROM settings").fetchone()
                conn.execute("SELECT value FROM settings WHERE key = ?", (f"k{n}",)).fetchone()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0] == 4
