"""Instance logs: rotated at start so they cannot fill the disk, tailed per launch, followed live."""

from __future__ import annotations

from pathlib import Path

from koboldtui.control import logs


def test_rotation_keeps_two_old_files(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    for generation in range(4):
        path.write_text(f"gen{generation}\n" * 100)
        assert logs.rotate_if_large(path, max_bytes=50, keep=2)
    assert not path.exists()
    assert (tmp_path / "a.log.1").read_text().startswith("gen3")
    assert (tmp_path / "a.log.2").read_text().startswith("gen2")
    assert not (tmp_path / "a.log.3").exists()
    path.write_text("small\n")
    assert not logs.rotate_if_large(path, max_bytes=50, keep=2)
    assert not logs.rotate_if_large(tmp_path / "missing.log")


def test_tail_of_last_launch_skips_older_runs(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text(
        logs.launch_header("a", "t1", "CPU only", "$ serve")
        + "old run crashed\n"
        + logs.launch_header("a", "t2", "CPU only", "$ serve")
        + "line1\nline2\nline3\n"
    )
    assert logs.tail_of_last_launch(path, 2) == ["line2", "line3"]
    assert logs.tail_of_last_launch(path, 10) == ["line1", "line2", "line3"]
    assert logs.tail_lines(path, 1) == ["line3"]
    assert logs.tail_lines(tmp_path / "none.log") == []


def test_follow_prints_new_lines_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("one\ntwo\n")
    steps = iter(
        [
            lambda: path.open("a").write("three\npart"),
            lambda: path.open("a").write("ial\n"),
            lambda: (path.rename(tmp_path / "a.log.1"), path.write_text("after rotation\n")),
        ]
    )
    done = [False]

    def fake_sleep(_: float) -> None:
        try:
            next(steps)()
        except StopIteration:
            done[0] = True

    seen = list(logs.follow(path, start_lines=1, should_stop=lambda: done[0], sleep=fake_sleep))
    assert seen == ["two", "three", "partial", "after rotation"]
