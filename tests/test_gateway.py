"""The gateway in front of real instances of the bundled model, on 127.0.0.1.

Two in-process instances (``alpha``, ``beta``, one pool ``bundled``) are shared by the
module; the tests that start, stop or kill an instance use a real ``koboldtui serve``
child spawned by the supervisor.
"""

from __future__ import annotations

import json
import os
import signal

import httpx
import openai
import pytest

from gateway_harness import ShiftedClock, running_gateway
from instance_harness import free_port, running_instance, wait_for
from koboldtui.config import ServeConfig
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.supervisor import Supervisor
from koboldtui.gateway.affinity import prefix_hashes, prompt_text
from koboldtui.gateway.wiring import make_gateway
from koboldtui.paths import HOME_ENV, app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore


@pytest.fixture(scope="module")
def box(tmp_path_factory, shared_models_dir):
    """Two ready instances saved in a module-wide home, and a gateway over them."""
    home = tmp_path_factory.mktemp("gw-home")
    paths = app_paths({HOME_ENV: str(home)}).ensure()
    model = next(shared_models_dir.glob("*.gguf"))
    store = InstanceStore(open_database(paths.database))
    config = ServeConfig(model=str(model), ctx=512, parallel=2, threads=1)
    with running_instance(config.with_changes(name="alpha", port=free_port()), model) as (a_url, a_rt), \
            running_instance(config.with_changes(name="beta", port=free_port()), model) as (b_url, b_rt):
        for name, url in (("alpha", a_url), ("beta", b_url)):
            port = int(url.rsplit(":", 1)[1])
            store.add(name, InstanceSpec(name=name, port=port, model=str(model), ctx=512, parallel=2,
                                         alias="bundled").to_dict())
        clock = ShiftedClock()
        gateway = make_gateway(paths, clock=clock, wait_s=60)
        with running_gateway(gateway, free_port(), watch=True) as base:
            wait_for(lambda: all(b.state == "ready" for b in gateway.table.all()), 20, "instances ready")
            yield {"base": base, "gateway": gateway, "paths": paths, "store": store, "model": model,
                   "clock": clock, "runtimes": {"alpha": a_rt, "beta": b_rt}}


def routed_to(gateway, instance: str) -> int:
    return sum(n for (_, i), n in gateway.metrics.requests.items() if i == instance)


def test_openai_client_switches_models_by_name(box):
    client = openai.OpenAI(base_url=box["base"] + "/v1", api_key="none", max_retries=0)
    ids = {m.id for m in client.models.list().data}
    assert {"alpha", "beta", "bundled"} <= ids
    for name in ("alpha", "beta"):
        before = routed_to(box["gateway"], name)
        reply = client.chat.completions.create(model=name, max_tokens=4, temperature=0,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].finish_reason in ("length", "stop")
        assert routed_to(box["gateway"], name) == before + 1
        # the instance saw a local request: the Horde steps aside for the person, as for a direct one
        assert box["runtimes"][name].gate.remaining() > 0
    chunks = list(client.completions.create(model="bundled", prompt="Once upon", max_tokens=5, stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_unknown_model_is_404_in_each_shape(box):
    r = httpx.post(box["base"] + "/v1/chat/completions", json={"model": "nope", "messages": []})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found" and "alpha" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=box["base"] + "/v1", api_key="x", max_retries=0).models.retrieve("nope")
    r = httpx.post(box["base"] + "/api/admin/reload_config", json={"filename": "nope"})
    assert r.json()["success"] is False and "beta" in r.json()["error"]


def test_admin_routes_switch_the_current_model(box):
    base, gateway = box["base"], box["gateway"]
    options = httpx.get(base + "/api/admin/list_options").json()
    assert options[:3] == ["alpha", "beta", "bundled"] and options[-2:] == ["initial_model", "unload_model"]
    for name in ("beta", "alpha"):
        assert httpx.post(base + "/api/admin/reload_config", json={"filename": name}).json() == {"success": True}
        before = routed_to(gateway, name)
        r = httpx.post(base + "/api/v1/generate", json={"prompt": "Hello", "max_length": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["results"][0]["text"] is not None
        assert routed_to(gateway, name) == before + 1
    assert httpx.get(base + "/api/extra/version").json()["admin"] == 1
    assert "result" in httpx.get(base + "/api/v1/model").json()


def test_admin_password_rule(box, tmp_path):
    gateway = make_gateway(box["paths"])
    with running_gateway(gateway, free_port(), admin_password="sesame", watch=False) as base:
        assert httpx.get(base + "/api/admin/list_options").json() == []
        r = httpx.post(base + "/api/admin/reload_config", json={"filename": "beta"})
        assert r.status_code == 401 and r.json()["success"] is False
        ok = httpx.post(base + "/api/admin/reload_config", json={"filename": "beta"},
                        headers={"Authorization": "Bearer sesame"})
        assert ok.json() == {"success": True}


def test_kobold_stream_passes_events_and_affinity_sticks(box):
    base, gateway = box["base"], box["gateway"]
    httpx.post(base + "/api/admin/reload_config", json={"filename": "bundled"})
    history = "A long story about a dragon and a knight. " * 12
    hits = gateway.metrics.affinity_hits
    with httpx.stream("POST", base + "/api/extra/generate/stream", timeout=30,
                      json={"prompt": history, "max_length": 4}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    assert events and "finish_reason" in json.loads(events[-1][5:])
    r = httpx.post(base + "/api/v1/generate", json={"prompt": history + " More.", "max_length": 2}, timeout=30)
    assert r.status_code == 200
    assert gateway.metrics.affinity_hits == hits + 1  # the same instance got the growing prompt


def test_gateway_status_and_metrics(box, capsys):
    status = httpx.get(box["base"] + "/api/koboldtui/gateway").json()
    assert status["pools"]["bundled"] == ["alpha", "beta"]
    assert {i["name"] for i in status["instances"]} == {"alpha", "beta"}
    from koboldtui.cli import main

    port = box["base"].rsplit(":", 1)[1]
    assert main(["gateway", "status", "--json", "--port", port]) == 0
    assert json.loads(capsys.readouterr().out)["pools"]["bundled"] == ["alpha", "beta"]
    assert main(["gateway", "status", "--port", port]) == 0
    assert "pool bundled" in capsys.readouterr().out
    text = httpx.get(box["base"] + "/metrics").text
    assert 'koboldtui_gateway_requests_total{model="alpha",instance="alpha"}' in text
    # a web page on another origin may not read the control route
    r = httpx.get(box["base"] + "/api/koboldtui/gateway", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


@pytest.fixture
def child(box):
    """A stopped serve instance ``gamma`` (its own pool) that the supervisor can spawn."""
    store, port = box["store"], free_port()
    store.add("gamma", InstanceSpec(name="gamma", port=port, model=str(box["model"]), ctx=512, parallel=2,
                                    threads=1, ttl_min=1.0).to_dict())
    supervisor = Supervisor(box["paths"], store)
    yield supervisor
    supervisor.stop("gamma", grace_s=2)
    store.remove("gamma")


def test_on_demand_start_then_ttl_stop(box, child):
    gateway = make_gateway(box["paths"], supervisor=child, clock=box["clock"], wait_s=60)
    with running_gateway(gateway, free_port(), watch=False) as base:
        assert gateway.table.get("gamma").state == "stopped"
        gateway.on_demand.wait_s = 0.3  # past the bound: 503 + Retry-After while it goes on loading
        r = httpx.post(base + "/v1/completions", json={"model": "gamma", "prompt": "Hi", "max_tokens": 3})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert "still loading" in r.json()["error"]["message"]
        gateway.on_demand.wait_s = 90
        r = httpx.post(base + "/v1/completions", json={"model": "gamma", "prompt": "Hi", "max_tokens": 3},
                       timeout=90)
        assert r.status_code == 200, r.text
        assert gateway.on_demand.counts.starts == 1  # the second request joined the first start
        snap = child.snapshot("gamma")
        assert snap.state.value == "ready" and snap.started_by == "gateway"
        assert gateway.on_demand.reap_idle() == []  # used just now
        box["clock"].offset += 61
        try:
            assert gateway.on_demand.reap_idle() == ["gamma"]
        finally:
            box["clock"].offset -= 61
        assert child.snapshot("gamma").state.value == "stopped"
        assert gateway.on_demand.counts.ttl_stops == 1


def test_failed_start_answers_with_the_reason(box):
    store = box["store"]
    store.add("broken", InstanceSpec(name="broken", port=free_port(), kind="command",
                                     command="sh -c 'echo no such model file >&2; exit 3' {port}").to_dict())
    try:
        gateway = make_gateway(box["paths"], wait_s=30)
        with running_gateway(gateway, free_port(), watch=False) as base:
            r = httpx.post(base + "/v1/completions", json={"model": "broken", "prompt": "x"}, timeout=60)
            assert r.status_code == 503
            assert "exited with code 3" in r.json()["error"]["message"]
            assert httpx.get(base + "/health").status_code == 200  # the gateway stays up
    finally:
        store.remove("broken")


def test_instance_killed_mid_stream_ends_the_stream(box, child):
    snap = child.start("gamma", wait=True, timeout_s=90)
    gateway = make_gateway(box["paths"], wait_s=30)
    with running_gateway(gateway, free_port(), watch=False) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=30)
        stream = client.chat.completions.create(model="gamma", max_tokens=400, stream=True, temperature=1,
                                                messages=[{"role": "user", "content": "Tell a long story"}])
        with pytest.raises(openai.APIError, match="mid-stream"):
            for n, _ in enumerate(stream):
                if n == 2:
                    os.killpg(snap.pid, signal.SIGKILL)
        assert gateway.table.get("gamma").out_of_rotation_until > gateway.clock()


def test_browser_page_on_another_origin_streams_and_aborts(box):
    base, origin = box["base"], "https://lite.koboldai.net"
    pre = httpx.options(base + "/api/extra/generate/stream", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] in ("*", origin)
    httpx.post(base + "/api/admin/reload_config", json={"filename": "alpha"})
    with httpx.stream("POST", base + "/api/extra/generate/stream", timeout=60, headers={"Origin": origin},
                      json={"prompt": "Write a very long poem about the sea.", "max_length": 400,
                            "genkey": "KCPP-gw-1"}) as r:
        assert r.headers["access-control-allow-origin"] in ("*", origin)
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert "token" in first
        aborted = httpx.post(base + "/api/extra/abort", json={"genkey": "KCPP-gw-1"}, headers={"Origin": origin})
        assert aborted.json()["success"] == "true"
        last = [line for line in lines if line.startswith("data:")][-1]
    assert json.loads(last[5:])["finish_reason"] == "abort"
    # a page may not send a body a form could send without a preflight
    assert httpx.post(base + "/v1/completions", content=b"{}", headers={
        "Origin": origin, "Content-Type": "text/plain"}).status_code == 415


def make_room_supervisor(box):
    """A supervisor whose VRAM check says gamma and delta never fit together (fake GPU, real processes)."""
    from koboldtui.control.gpu_plan import default_gpu_planner
    from koboldtui.control.state import RUNNING, StartError

    store = box["store"]
    base = default_gpu_planner(store)
    holder: dict[str, Supervisor] = {}

    def planner(spec, model_path):
        other = {"gamma": "delta", "delta": "gamma"}.get(spec.name)
        if other and holder["sup"].snapshot(other).state in RUNNING:
            raise StartError(f"cannot start {spec.name!r}: the model does not fit in VRAM "
                             f"({other} holds it)")
        return base(spec, model_path)

    supervisor = Supervisor(box["paths"], store, gpu_planner=planner)
    holder["sup"] = supervisor
    return supervisor


def test_room_is_made_only_from_what_the_gateway_started(box, child):
    store = box["store"]
    store.add("delta", InstanceSpec(name="delta", port=free_port(), model=str(box["model"]), ctx=512,
                                    parallel=2, threads=1, gpus="cpu").to_dict())
    supervisor = make_room_supervisor(box)
    try:
        supervisor.start("gamma", wait=True, timeout_s=90)  # started by hand: never the gateway's to stop
        gateway = make_gateway(box["paths"], supervisor=supervisor, wait_s=60)
        with running_gateway(gateway, free_port(), watch=False) as base:
            ask = {"prompt": "Hi", "max_tokens": 2}
            r = httpx.post(base + "/v1/completions", json={"model": "delta", **ask}, timeout=90)
            assert r.status_code == 503 and "does not fit in VRAM" in r.json()["error"]["message"]
            assert supervisor.snapshot("gamma").state.value == "ready"
            supervisor.stop("gamma", grace_s=5)
            gateway.table.get("gamma").state = "stopped"
            assert httpx.post(base + "/v1/completions", json={"model": "gamma", **ask}, timeout=90).status_code == 200
            r = httpx.post(base + "/v1/completions", json={"model": "delta", **ask}, timeout=90)
            assert r.status_code == 200, r.text
            assert supervisor.snapshot("gamma").state.value == "stopped"
            assert gateway.on_demand.counts.room_stops == 1
    finally:
        supervisor.stop("delta", grace_s=5)
        supervisor.stop("gamma", grace_s=5)
        store.remove("delta")


def test_two_gateways_asking_at_once_start_one_process(box, child):
    import concurrent.futures

    gateways = [make_gateway(box["paths"], supervisor=Supervisor(box["paths"], box["store"]), wait_s=90)
                for _ in range(2)]
    with running_gateway(gateways[0], free_port(), watch=False) as one, \
            running_gateway(gateways[1], free_port(), watch=False) as two:
        def ask(base: str) -> int:
            return httpx.post(base + "/v1/completions", timeout=120,
                              json={"model": "gamma", "prompt": "Hi", "max_tokens": 2}).status_code

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(ask, [one, two, one, two]))
    assert codes == [200] * 4
    assert sum(g.on_demand.counts.starts for g in gateways) == 2  # each gateway's one start call ...
    # ... but one process runs: the other start adopted it (the shared run record says a
    # gateway started it, so either gateway's TTL may stop it; a person's start would not)
    assert len([launch for launch in box["store"].launches() if launch.name == "gamma"]) == 1
    assert gateways[0].on_demand.supervisor.snapshot("gamma").started_by == "gateway"


def test_request_that_got_nothing_is_retried_on_another_member(box):
    box["store"].add("ghost", InstanceSpec(name="ghost", port=free_port(), model=str(box["model"]),
                                           alias="bundled").to_dict())
    try:
        gateway = make_gateway(box["paths"])
        with running_gateway(gateway, free_port(), watch=False) as base:
            for b in gateway.table.all():  # the gateway thinks ghost is ready (a look just before it died)
                b.state = "ready"
            body = {"model": "bundled", "prompt": "The ghost story begins here. " * 10, "max_tokens": 2}
            gateway.prefixes.record("ghost", prefix_hashes(prompt_text("/v1/completions", body)))
            r = httpx.post(base + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            assert gateway.metrics.retries == 1
            ghost = gateway.table.get("ghost")
            assert not ghost.in_rotation(gateway.clock()) and ghost.errors == 1
            r = httpx.post(base + "/v1/completions", json=body, timeout=60)  # ghost stays out
            assert r.status_code == 200 and gateway.metrics.retries == 1
    finally:
        box["store"].remove("ghost")
