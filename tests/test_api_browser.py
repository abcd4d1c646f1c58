"""What a web page may do with the server, checked with the headers a browser sends, over real HTTP.

The instance here never loads its model: the browser rules run before any route, so the
checks need no model and take milliseconds (the Chromium test does the same with a real
browser and the real model).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from koboldtui.api.app import build_app
from koboldtui.api.browser_guard import BrowserPolicy, host_name, is_json_type
from koboldtui.api.route_aliases import canonical_path
from koboldtui.config import ServeConfig
from koboldtui.runtime import Runtime
from tests.instance_harness import free_port

LITE = "https://lite.koboldai.net"


@contextlib.contextmanager
def unloaded_instance(**changes) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 whose model never loads (/health says "loading")."""
    config = ServeConfig(port=free_port(), **changes)
    app = build_app(Runtime(config, Path("never-loaded.gguf")), load_on_startup=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with unloaded_instance() as url:
        yield url


def test_lite_preflight_from_another_origin_is_answered(base):
    r = httpx.options(base + "/api/v1/model", headers={
        "Origin": LITE, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", LITE)
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    got = httpx.get(base + "/api/v1/model", headers={"Origin": LITE, "Content-Type": "application/json"})
    assert got.status_code == 200 and got.headers["access-control-allow-origin"] in ("*", LITE)
    # POST routes too (generate, stream, check, abort): the preflight names the method
    for path in ("/api/v1/generate", "/api/extra/generate/stream", "/api/extra/abort", "/v1/chat/completions"):
        r = httpx.options(base + path, headers={"Origin": LITE, "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "content-type,authorization"})
        assert r.status_code == 200, (path, r.text)
        assert "POST" in r.headers["access-control-allow-methods"]


def test_foreign_host_header_is_refused(base):
    r = httpx.get(base + "/api/v1/model", headers={"Host": "rebind.attacker.example"})
    assert r.status_code == 403
    assert "--allow-host rebind.attacker.example" in r.json()["error"]
    for host in (f"127.0.0.1:{base.rsplit(':', 1)[1]}", "localhost", "[::1]:5001", "LOCALHOST."):
        assert httpx.get(base + "/api/v1/model", headers={"Host": host}).status_code == 200, host


def test_allowed_host_names_are_answered():
    with unloaded_instance(allow_hosts=("*.lan", "box.example")) as url:
        assert httpx.get(url + "/api/v1/model", headers={"Host": "gpu.lan:5001"}).status_code == 200
        assert httpx.get(url + "/api/v1/model", headers={"Host": "box.example"}).status_code == 200
        assert httpx.get(url + "/api/v1/model", headers={"Host": "evil.example"}).status_code == 403


def test_control_routes_refuse_cross_origin_pages_without_a_key(base):
    for headers in ({"Origin": LITE}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-site"}):
        r = httpx.post(base + "/api/koboldtui/horde/stop", json={}, headers=headers)
        assert r.status_code == 403, headers
        assert "--api-key" in r.json()["error"] and "access-control-allow-origin" not in r.headers
    pre = httpx.options(base + "/api/koboldtui/horde/maintenance", headers={
        "Origin": LITE, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    # the panel and curl send no Origin: they still reach the route (409: no worker here)
    assert httpx.post(base + "/api/koboldtui/horde/stop", json={}).status_code == 409


def test_control_routes_answer_a_page_that_holds_the_key():
    with unloaded_instance(api_key="k3y") as url:
        headers = {"Origin": LITE, "Authorization": "Bearer k3y"}
        r = httpx.post(url + "/api/koboldtui/horde/start", json={}, headers=headers)
        assert r.status_code == 409 and r.headers["access-control-allow-origin"] in ("*", LITE)
        r = httpx.post(url + "/api/koboldtui/horde/start", json={}, headers={"Origin": LITE})
        assert r.status_code == 401


def test_text_plain_and_form_bodies_from_another_origin_are_refused_with_415(base):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = httpx.post(base + "/api/v1/generate", content=b'{"prompt": "hi"}',
                       headers={"Content-Type": content_type, "Origin": LITE})
        assert r.status_code == 415, content_type
        assert "application/json" in r.json()["error"]
    # a page on another port of the same host (same-site) or one that hides its Origin
    r = httpx.post(base + "/v1/completions", content=b'{"prompt": "hi"}',
                   headers={"Content-Type": "text/plain", "Sec-Fetch-Site": "same-site"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(base + "/api/koboldtui/horde/stop", content=b"{}",
                   headers={"Content-Type": "", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code in (403, 415)
    # a page on this very origin may send what it likes
    r = httpx.post(base + "/api/extra/tokencount", content=b'{"prompt": "hi"}',
                   headers={"Content-Type": "text/plain", "Origin": base, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 503  # read as JSON; the model of this instance never loads


def test_clients_that_are_no_browser_need_no_content_type(base):
    """curl -d, requests.post(data=...), urllib: no Origin, no Sec-Fetch-Site -> read as JSON."""
    import urllib.request

    body = b'{"prompt": "hi"}'
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):  # curl -d / none
        headers = {"Content-Type": content_type} if content_type else {}
        r = httpx.post(base + "/api/extra/tokencount", content=body, headers=headers)
        assert r.status_code == 503, (content_type, r.text)  # past the guard: "model loading"
    req = urllib.request.Request(base + "/api/extra/tokencount", data=body)  # urllib: form type
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as err:
        assert err.code == 503
    assert httpx.post(base + "/api/koboldtui/horde/stop", content=b"{}", headers={"Content-Type": ""}).status_code == 409


def test_requests_data_without_content_type_passes(base):
    requests = pytest.importorskip("requests")  # not a dependency; installed with most toolchains
    assert requests.post(base + "/api/extra/tokencount", data=b'{"prompt": "hi"}', timeout=10).status_code == 503


def test_restricted_origins():
    with unloaded_instance(allow_origins=(LITE,)) as url:
        ok = httpx.get(url + "/api/v1/model", headers={"Origin": LITE})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == LITE
        r = httpx.get(url + "/api/v1/model", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "--allow-origin https://evil.example" in r.json()["error"]


def test_protected_mode_keeps_discovery_routes_readable():
    with unloaded_instance(api_key="k3y") as url:
        assert httpx.get(url + "/api/v1/model").json()["result"] == "koboldcpp/protected-model"
        assert httpx.get(url + "/api/extra/version").json()["protected"] is True
        assert httpx.get(url + "/api/v1/info/version").status_code == 200
        assert httpx.get(url + "/api/extra/perf").status_code == 401
        named = httpx.get(url + "/api/v1/model", headers={"Authorization": "Bearer k3y"}).json()["result"]
        assert named == "koboldcpp/never-loaded"


def test_aliases_and_trailing_slashes_reach_the_route(base):
    for path in ("/api/v1/model/", "/api/latest/model", "/api/latest/info/version/", "/api/extra/version/"):
        r = httpx.get(base + path)
        assert r.status_code == 200, path
    assert httpx.get(base + "/sdapi/v1/sd-models").json() == []
    assert httpx.get(base + "/api/v1/config/soft_prompts_list").json() == {"values": []}
    assert httpx.get(base + "/api/v1/config/soft_prompt").json() == {"value": ""}
    assert httpx.get(base + "/api/extra/preloadstory").json() == {}


def test_policy_units():
    assert host_name("[::1]:5001") == "::1" and host_name("Example.COM.:80") == "example.com"
    assert is_json_type("application/json; charset=utf-8") and is_json_type("application/vnd.api+json")
    assert not is_json_type("text/plain")
    policy = BrowserPolicy(listen_host="0.0.0.0", has_key=True)
    assert policy.host_allowed("anything.example")  # every interface: the key protects
    assert not BrowserPolicy().host_allowed("192.168.1.5:5001")
    assert canonical_path("/api/latest/generate/") == "/api/v1/generate"
    assert canonical_path("/v1/completion") == "/v1/completions" and canonical_path("/") == "/"


def test_cli_flags_reach_the_config_and_the_child_argv():
    from koboldtui.cli import build_parser
    from koboldtui.commands.serve import config_from_args

    args = build_parser().parse_args(["serve", "--allow-origin", LITE, "--allow-host", "box.lan"])
    config = config_from_args(args, environ={})
    assert config.allow_origins == (LITE,) and config.allow_hosts == ("box.lan",)
    argv = config.to_argv()
    assert argv[argv.index("--allow-origin") + 1] == LITE and argv[argv.index("--allow-host") + 1] == "box.lan"
    default = config_from_args(build_parser().parse_args(["serve"]), environ={})
    assert default.allow_origins == ("*",) and "--allow-origin" not in default.to_argv()
