"""A launch token must never read as an option: ``--launch-token -AbC`` made 1 launch in 60 exit 2."""

from __future__ import annotations

from pathlib import Path

from koboldtui.cli import build_parser
from koboldtui.config import ServeConfig, new_launch_token
from koboldtui.control.launcher import prepare_launch
from koboldtui.control.spec import InstanceSpec
from koboldtui.gpu.nvml import GpuInventory
from koboldtui.gpu.priority import plan_gpus
from koboldtui.paths import app_paths


def _parse_serve(argv: list[str]):
    return build_parser().parse_args(argv)


def test_a_token_starting_with_a_dash_is_refused_before_it_reaches_a_command_line() -> None:
    # the fault: token_urlsafe gives "-AbC..." ~1.6 % of the time; the child then exits 2
    problems = ServeConfig(launch_token="-AbC_x").validate()
    assert any("--launch-token" in p for p in problems), problems


def test_1000_launches_all_parse_back_to_their_own_token(bundled_model: Path) -> None:
    paths = app_paths()
    spec = InstanceSpec(name="tok", port=5999, gpus="cpu")
    cpu_plan = plan_gpus("cpu", [], GpuInventory(False, "CPU only", None))
    seen = set()
    for _ in range(1000):
        prepared = prepare_launch(
            spec, paths=paths, secret={}, planner=lambda s, m: cpu_plan,
            command_builder=list, environ={},
        )
        args = _parse_serve(prepared.command)  # would SystemExit(2) on a dash-led token
        assert args.launch_token == prepared.token
        assert not prepared.token.startswith("-")
        seen.add(prepared.token)
    assert len(seen) == 1000


def test_new_tokens_are_long_enough_to_be_unguessable() -> None:
    assert len(new_launch_token()) >= 32 and new_launch_token() != new_launch_token()
