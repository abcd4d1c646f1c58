"""Instance specs: JSON round trip without secrets, validation in words, and the serve flags they become."""

from __future__ import annotations

import json

import pytest

from koboldtui.config import HordeSettings
from koboldtui.control.spec import InstanceSpec, SpecError, gpus_label, parse_gpus


def test_spec_json_round_trip_keeps_everything_but_secrets() -> None:
    spec = InstanceSpec(
        name="big",
        port=5002,
        model="/models/x.gguf",
        gpus=["GPU-aaa", "1"],
        gpu_layers=-1,
        ctx=8192,
        batch_size=256,
        parallel=8,
        threads=6,
        autostart=True,
        restart="on-failure",
        extra_env={"GGML_CUDA_NO_PINNED": "1"},
        horde=HordeSettings(enabled=True, api_key="SECRET-KEY", worker_name="w1", nsfw=True),
    )
    text = json.dumps(spec.to_dict())
    assert "SECRET-KEY" not in text
    back = InstanceSpec.from_dict(json.loads(text))
    assert back.horde.api_key == ""
    assert back.with_changes(horde=spec.horde) == spec


def test_from_dict_ignores_keys_from_a_newer_version() -> None:
    data = InstanceSpec(name="a", port=5001).to_dict()
    data["future_field"] = 1
    data["horde"]["future"] = True
    assert InstanceSpec.from_dict(data).name == "a"


def test_to_serve_config_becomes_serve_flags_with_secrets_only_in_env() -> None:
    spec = InstanceSpec(
        name="a",
        port=5005,
        model="/m/a.gguf",
        gpus="cpu",
        gpu_layers=20,
        ctx=512,
        parallel=2,
        batch_size=128,
        horde=HordeSettings(enabled=True, worker_name="w"),
    )
    config = spec.to_serve_config(launch_token="tok", horde_key="hk", api_key="ak")
    argv = config.to_argv()
    assert argv[:7] == ["serve", "--name", "a", "--host", "127.0.0.1", "--port", "5005"]
    assert "--launch-token" in argv and "tok" in argv
    assert argv[argv.index("--gpu-layers") + 1] == "0"  # CPU only: nothing offloaded
    assert "hk" not in argv and "ak" not in argv
    assert config.secret_env() == {"KOBOLDTUI_API_KEY": "ak", "KOBOLDTUI_HORDE_KEY": "hk"}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (InstanceSpec(name="a", port=0), "port 0 is out of range"),
        (InstanceSpec(name="a", port=70000), "port 70000 is out of range"),
        (InstanceSpec(name="has space", port=5001), "instance name 'has space' is not usable"),
        (InstanceSpec(name="a", port=5001, restart="always"), "--restart 'always'"),
        (InstanceSpec(name="a", port=5001, model="rel/x.gguf"), "must be absolute"),
        (InstanceSpec(name="a", port=5001, host="0.0.0.0"), "add --api-key"),
        (InstanceSpec(name="a", port=5001, horde=HordeSettings(enabled=True)), "needs an API key"),
        (InstanceSpec(name="a", port=5001, extra_env={"1BAD": "x"}), "not a valid environment"),
    ],
)
def test_validate_says_what_to_fix(spec: InstanceSpec, needle: str) -> None:
    problems = spec.validate()
    assert any(needle in p for p in problems), problems


def test_a_good_spec_has_no_problems() -> None:
    assert InstanceSpec(name="ok-1.x", port=5001).validate() == []
    assert InstanceSpec(name="pub", port=5001, host="0.0.0.0").validate(api_key="k") == []


def test_parse_gpus() -> None:
    assert parse_gpus("auto") == "auto"
    assert parse_gpus(" CPU ") == "cpu"
    assert parse_gpus("1, GPU-abc") == ["1", "GPU-abc"]
    assert gpus_label(["1", "GPU-abc"]) == "1,GPU-abc"
    with pytest.raises(SpecError, match="neither a GPU index"):
        parse_gpus("fast")
    with pytest.raises(SpecError, match="twice"):
        parse_gpus("0,0")
    with pytest.raises(SpecError, match="needs 'auto'"):
        parse_gpus(",")
