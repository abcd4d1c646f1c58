"""Two controllers and a killer on the same three instances (tests/control_stress.py), bounded to about a minute.

The long run (>= 5,000 operations) is ``bench/control_stress.py``; its numbers are in the README.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from control_stress import run_stress

OPS_PER_DRIVER = 260  # two drivers: >= 500 operations


def test_two_controllers_and_a_killer_leave_the_record_true(tmp_path: Path) -> None:
    began = time.monotonic()
    result = run_stress(OPS_PER_DRIVER, home=tmp_path / "stress", seed=int(os.environ.get("KT_STRESS_SEED", "1")),
                        timeout_s=90)
    assert result.tracebacks == []
    assert result.ops >= 500 and result.kills > 0 and result.pauses > 0, result
    assert result.duplicates == [], "two processes ran one instance"
    assert result.orphans == [], "a process ran that no record names"
    assert result.ps_disagrees == [], "ps disagrees with the processes that exist"
    assert result.running_after_stop == [], "an instance last stopped runs again"
    assert result.final_left == [], "processes left after the final stop"
    assert time.monotonic() - began < 90
