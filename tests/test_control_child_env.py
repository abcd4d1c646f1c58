"""What a child instance gets in its environment: our variables, never our secrets."""

from __future__ import annotations

from koboldtui.control.process import child_environment


def test_secrets_exported_in_the_shell_do_not_leak_into_other_instances():
    base = {"PATH": "/usr/bin", "KOBOLDTUI_API_KEY": "key-of-a", "KOBOLDTUI_HORDE_KEY": "hk-a"}
    env = child_environment(base, {"CUDA_VISIBLE_DEVICES": ""})
    assert "KOBOLDTUI_API_KEY" not in env and "KOBOLDTUI_HORDE_KEY" not in env
    assert env["PATH"] == "/usr/bin" and env["CUDA_VISIBLE_DEVICES"] == ""
    own = child_environment(base, {"KOBOLDTUI_API_KEY": "key-of-b"})
    assert own["KOBOLDTUI_API_KEY"] == "key-of-b"
    assert env["PYTHONUNBUFFERED"] == "1"
