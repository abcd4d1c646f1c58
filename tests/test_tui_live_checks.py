"""LiveBackend's side of issue 19, without starting a model: URLs in the views, a bad model
refused before anything stops, a pre-launch failure in panel words, and dismiss."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from koboldtui.control.spec import InstanceSpec
from koboldtui.tui.backend import BackendError
from koboldtui.tui.live_backend import LiveBackend
from tests.instance_harness import free_port
from tests.test_control_model_switch import vocab_only


def test_live_views_checks_and_dismiss(tmp_path: Path, bundled_model: Path) -> None:
    backend = LiveBackend()
    try:
        port = free_port()
        backend.registry.add(InstanceSpec(name="a", port=port, model="bundled", gpus="cpu", gpu_layers=0,
                                          autostart=False))
        backend.registry.add(InstanceSpec(name="ghost", port=free_port(), kind="command", autostart=False,
                                          command="no-such-program-19 --port {port}", restart="no"))
        backend.registry.add(InstanceSpec(name="box2", port=5001, kind="remote", url="http://127.0.0.1:9/",
                                          autostart=False))
        views = {v.name: v for v in backend.instances()}
        assert views["a"].url == f"http://127.0.0.1:{port}" and views["a"].address == f":{port}"
        assert views["ghost"].program == "no-such-program-19"
        assert views["box2"].url == "http://127.0.0.1:9"

        assert "vocab-only" in (backend.check_model("a", str(vocab_only(tmp_path / "v.gguf"))) or "")
        assert backend.check_model("a", str(bundled_model)) is None
        assert "chosen on its own machine" in (backend.check_model("box2", str(bundled_model)) or "")

        with pytest.raises(BackendError) as refused:
            backend.start_instance("ghost")
        assert "the command field of the form (e)" in str(refused.value)
        assert not re.search(r"--[a-z]|koboldtui instance", str(refused.value)), str(refused.value)

        backend.supervisor.supervise("ghost")  # recorded as failed (what sup18 does for every start)
        assert next(v for v in backend.instances() if v.name == "ghost").state == "failed"
        backend.dismiss_failure("ghost")
        assert next(v for v in backend.instances() if v.name == "ghost").state == "stopped"
    finally:
        backend.close(stop_instances=True)


def test_cpu_mode_fit_advice_is_true_and_in_panel_words(bundled_model: Path) -> None:
    """Issue 19 leftover: on a machine without a usable GPU the form's fit line spoke of --cpu and of
    picking another GPU; it says what the CPU needs instead (RAM), whether or not a stale GPU is ticked."""
    from koboldtui.tui.panel_words import panel_words

    backend = LiveBackend()
    try:
        if backend._inventory().gpus:
            pytest.skip("this machine has a GPU: the CPU-mode advice is for machines without one")
        for ticked in ((), ("GPU-0000-gone",)):
            fit = backend.fit_estimate(str(bundled_model), 99, 4096, 1, ticked)
            assert fit.fits and "no VRAM needed" in fit.text and "GiB RAM" in fit.text, fit.text
            assert not re.search(r"--[a-z]|another GPU|free some VRAM", fit.text), fit.text
        assert "GPUs ticked are not on this machine" in backend.fit_estimate(
            str(bundled_model), 99, 4096, 1, ("GPU-0000-gone",)).text
        report = backend.gateway_report()  # nothing saved, nothing on the port: a state, not an error
        assert report.state in ("not enabled", "answering") and report.url.startswith("http://127.0.0.1:")
    finally:
        backend.close(stop_instances=False)
    advice = panel_words("needs ~9 GiB, GPU 0 has 2 GiB free: only --gpu-layers 0 fits: pick another GPU, "
                         "free some VRAM, or run on the CPU (--cpu)")
    assert "run it on the CPU (untick every GPU in the form, e)" in advice and "no GPU ticked" not in advice
    assert not re.search(r"--[a-z]", advice), advice
