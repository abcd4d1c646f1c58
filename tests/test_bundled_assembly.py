"""Two processes assembling the bundled model at once both succeed (they once shared one .partial file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ASSEMBLE = "from koboldtui.models.bundled import bundled_model_path; print(bundled_model_path())"


def test_two_processes_assembling_at_once_both_get_the_model(tmp_path: Path) -> None:
    env = {**os.environ, "KOBOLDTUI_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", ASSEMBLE], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    model = Path(paths.pop())
    assert model.read_bytes()[:4] == b"GGUF"
    assert not list(model.parent.glob("*.partial")) and not list(model.parent.glob("*.tmp"))
