"""Auth with --api-key, the bounded queue, and refusing to expose an unprotected API."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from koboldtui.config import ServeConfig
from tests.instance_harness import running_instance


def test_api_key_guards_every_route_but_health(bundled_model):
    with running_instance(ServeConfig(ctx=256, parallel=2, batch_size=64, api_key="s3cret"), bundled_model) as (base, _):
        assert httpx.get(base + "/health").status_code == 200
        r = httpx.get(base + "/api/extra/perf")
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        r = httpx.get(base + "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.get(base + "/api/koboldtui/status", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_full_queue_answers_503_with_retry_after(bundled_model):
    config = ServeConfig(ctx=256, parallel=1, batch_size=64, max_queue=1)
    with running_instance(config, bundled_model) as (base, _):
        async def one(c):
            return await c.post("/api/v1/generate", json={"prompt": "x", "max_length": 60, "ban_eos_token": True})

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=300) as c:  # a loaded CI box is slow
                return await asyncio.gather(*(one(c) for _ in range(5)))

        codes = [r for r in asyncio.run(main())]
        busy = [r for r in codes if r.status_code == 503]
        assert busy, [r.status_code for r in codes]
        assert busy[0].headers["Retry-After"] == "5" and "queue is full" in busy[0].json()["error"]
        assert any(r.status_code == 200 for r in codes)


def test_non_loopback_host_without_key_is_refused():
    problems = ServeConfig(host="0.0.0.0").validate()
    assert any("--api-key" in p for p in problems)
    assert not ServeConfig(host="0.0.0.0", api_key="k").validate()


@pytest.mark.parametrize("changes,needle", [
    ({"port": 70000}, "out of range"),
    ({"parallel": 0}, "--parallel"),
    ({"ctx": 16}, "--ctx"),
    ({"tensor_split": "3,x"}, "--tensor-split"),
    ({"threads": 0}, "--threads"),
    ({"batch_size": 0}, "--batch-size"),
])
def test_config_validation_messages(changes, needle):
    assert any(needle in p for p in ServeConfig(**changes).validate())
