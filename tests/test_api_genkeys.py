"""Shared genkeys (issue 20, point 3) against a real instance over real HTTP.

A request is its own handle: a stream that ends aborts only itself, and ``genkey`` selects
only among the requests its sender's address sent with that key. The second client sends
from 127.0.0.2 (all of 127/8 is loopback on Linux), so the two are different addresses.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from koboldtui.config import ServeConfig
from tests.instance_harness import running_instance, wait_for

# long enough to outlive every check below on a fast machine; each test ends them with an abort
LONG = {"prompt": "Count to a thousand:", "max_length": 200, "ban_eos_token": True, "temperature": 0}


@pytest.fixture(scope="module")
def instance(shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(ServeConfig(ctx=256, parallel=4, batch_size=64, max_queue=8), model) as (base, runtime):
        yield base, runtime


def _client(base: str, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60, transport=httpx.HTTPTransport(local_address=source))


class Background:
    """One generate (plain or streamed) in a thread; ``finish`` is its finish_reason."""

    def __init__(self, base: str, body: dict[str, Any], *, stream: bool = False, source: str = "127.0.0.1") -> None:
        self.finish: str | None = None
        self.tokens = 0
        self._args = (base, body, stream, source)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        base, body, stream, source = self._args
        with _client(base, source) as client:
            if not stream:
                result = client.post("/api/v1/generate", json=body).json()["results"][0]
                self.finish, self.tokens = result["finish_reason"], result["completion_tokens"]
                return
            with client.stream("POST", "/api/extra/generate/stream", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        self.tokens += 1
                        self.finish = event["finish_reason"] or self.finish

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the request never ended"

    def running(self) -> bool:
        return self._thread.is_alive() and self.finish is None


def _check(client: httpx.Client, genkey: str | None) -> str:
    body = {"genkey": genkey} if genkey is not None else {}
    return client.post("/api/extra/generate/check", json=body).json()["results"][0]["text"]


def _started(base: str, genkey: str) -> str:
    with _client(base) as client:
        return str(wait_for(lambda: _check(client, genkey), 30, f"text of {genkey}"))


def test_a_finished_stream_never_cuts_another_with_the_same_genkey(instance) -> None:
    base, _ = instance
    long = Background(base, {**LONG, "genkey": "SAME"}, stream=True)
    _started(base, "SAME")
    short = Background(base, {"prompt": "Hi", "max_length": 3, "ban_eos_token": True, "genkey": "SAME"},
                       stream=True)
    short.join()
    assert short.finish == "length"
    time.sleep(0.5)  # the short stream's cleanup used to abort the long one here
    assert long.running(), f"the long stream ended ({long.finish}) when the short one with its genkey did"
    with _client(base) as me:
        assert me.post("/api/extra/abort", json={"genkey": "SAME"}).json()["success"] == "true"
    long.join()
    assert long.finish == "abort"


def test_another_address_can_neither_read_nor_abort_a_request_by_its_genkey(instance) -> None:
    base, _ = instance
    mine = Background(base, {**LONG, "genkey": "K1"})
    _started(base, "K1")
    with _client(base, "127.0.0.2") as other:
        assert _check(other, "K1") == ""  # not its text
        assert other.post("/api/extra/abort", json={"genkey": "K1"}).json()["success"] == "false"
        assert other.post("/api/extra/abort", json={}).json()["success"] == "false"  # it has none in flight
    time.sleep(0.3)
    assert mine.running()
    with _client(base) as me:
        assert _check(me, "K1")
        assert me.post("/api/extra/abort", json={"genkey": "K1"}).json() == {"success": "true", "done": "true"}
    mine.join()
    assert mine.finish == "abort" and mine.tokens < 200


def test_one_abort_ends_one_request_of_a_shared_key_and_the_other_goes_on(instance) -> None:
    base, runtime = instance
    first = Background(base, {**LONG, "genkey": "DUP"})
    _started(base, "DUP")
    second = Background(base, {**LONG, "genkey": "DUP"})
    wait_for(lambda: len(runtime.requests.live_of_address("127.0.0.1")) == 2, 30, "both requests")
    with _client(base) as me:
        assert me.post("/api/extra/abort", json={"genkey": "DUP"}).json()["success"] == "true"
        second.join()
        assert second.finish == "abort"  # the newest one
        time.sleep(0.3)
        assert first.running()
        assert me.post("/api/extra/abort", json={"genkey": "DUP"}).json()["success"] == "true"
    first.join()
    assert first.finish == "abort"


def test_without_a_key_abort_and_check_keep_koboldcpps_single_user_rule(instance) -> None:
    base, runtime = instance
    alone = Background(base, dict(LONG))
    with _client(base) as me:
        assert wait_for(lambda: _check(me, None), 30, "the keyless request's text")  # its own, alone
        with _client(base, "127.0.0.2") as other:
            assert _check(other, None) == ""
        assert me.post("/api/extra/abort", json={}).json()["success"] == "true"
    alone.join()
    assert alone.finish == "abort"
    # two in flight from one address: a keyless abort or check cannot tell which is meant
    one, two = Background(base, dict(LONG)), Background(base, dict(LONG))
    live = wait_for(lambda: (h := runtime.requests.live_of_address("127.0.0.1")) and len(h) == 2 and h,
                    30, "both requests")
    with _client(base) as me:
        assert me.post("/api/extra/abort", json={}).json()["success"] == "false"
        assert _check(me, None) == ""
        time.sleep(0.3)
        assert one.running() and two.running()
        for handle in live:  # the panel's way: each request's own id, from the status queue
            assert me.post("/api/extra/abort", json={"genkey": handle.genkey}).json()["success"] == "true"
    one.join()
    two.join()
    assert one.finish == two.finish == "abort"
