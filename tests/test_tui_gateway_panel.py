"""The gateway in the panel: its row (URL, state, current model), the G view, u / m to switch the
current model, c to copy the URL; and the reader against a real gateway."""

from __future__ import annotations

import threading

import httpx

from koboldtui.config import ServeConfig
from koboldtui.tui.backend import InstanceDraft
from koboldtui.tui.screens.gateway_screen import CurrentModelPicker, GatewayScreen
from koboldtui.tui.screens.help import HelpScreen
from koboldtui.tui.widgets.instance_tables import InstancesTable
from tests.test_tui_dashboard import make_app, settle, wait_for
from tests.tui_fakes import FakeBackend, screen_text

GATEWAY_CMD = "/usr/bin/python3 -m koboldtui.cli gateway --port {port} --host {host}"
STATUS = {"current_model": "main", "pools": {"chat": ["main", "chat-cpu"]},
          "instances": [{"name": "main", "state": "ready", "requests": 30, "in_flight": 1, "pin": True,
                         "ttl_min": 0, "started_by_gateway": False},
                        {"name": "chat-cpu", "state": "stopped", "requests": 10, "in_flight": 0, "pin": False,
                         "ttl_min": 5, "started_by_gateway": True}],
          "routing": {"share": {"main": 0.75, "chat-cpu": 0.25}, "affinity_hits": 27, "retries": 1,
                      "errors_5xx": 0},
          "starts": 2, "ttl_stops": 1, "room_stops": 0, "last_errors": ["start chat-cpu: port 5002 is taken"]}


def with_gateway(status: dict | None = STATUS) -> FakeBackend:
    backend = FakeBackend()
    backend.drafts["gateway"] = InstanceDraft(ServeConfig(name="gateway", port=5000), kind="command",
                                              command=GATEWAY_CMD, health="/health")
    backend.states["gateway"] = "ready" if status else "failed"
    backend.gateway_enabled = True
    backend.gateway_status = dict(status) if status else None
    return backend


async def gateway_drawn(pilot, app) -> None:
    await settle(pilot, app)
    await wait_for(pilot, lambda: app.gateway_report is not None)
    await pilot.pause()


async def test_row_says_not_enabled_and_c_copies_the_url() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await gateway_drawn(pilot, app)
        text = screen_text(app)
        assert "Gateway http://127.0.0.1:5000" in text and "not enabled" in text
        await pilot.press("c")
        assert app.clipboard == "http://127.0.0.1:5000"
        await pilot.press("G")
        await wait_for(pilot, lambda: isinstance(app.screen, GatewayScreen))
        await pilot.pause()
        assert "koboldtui gateway enable" in screen_text(app)


async def test_view_shows_pools_shares_counts_and_errors_and_u_switches_the_current_model() -> None:
    backend = with_gateway()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await gateway_drawn(pilot, app)
        text = screen_text(app)
        assert "answering · model main" in text
        # the gateway's own row is the gateway, not a model (its program is python)
        row = app.screen.query_one(InstancesTable).get_row("gateway")
        assert "gateway" in str(row[1]) and "python" not in str(row[1])
        await pilot.press("G")
        await wait_for(pilot, lambda: isinstance(app.screen, GatewayScreen))
        await pilot.pause()
        view = screen_text(app)
        for words in ("pool chat", "75%", "affinity hits 27", "on-demand starts 2", "TTL stops 1",
                      "port 5002 is taken", "30 req"):
            assert words in view, words
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, CurrentModelPicker))
        await pilot.press("down", "enter")  # main (current) → chat-cpu
        await wait_for(pilot, lambda: ("use_model", "chat-cpu") in backend.calls)
        await wait_for(pilot, lambda: "model chat-cpu" in screen_text(app))
        assert not any(c[0] == "switch_model" for c in backend.calls)  # no instance was touched


async def test_m_on_the_gateway_row_picks_the_current_model_not_a_gguf() -> None:
    backend = with_gateway(None)  # enabled, but it does not answer
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await gateway_drawn(pilot, app)
        assert "not answering" in screen_text(app)
        app.select_instance("gateway")
        await pilot.pause()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, CurrentModelPicker))
        await pilot.pause()
        picker_text = screen_text(app)
        assert "chat-cpu" in picker_text and "gateway  instance" not in picker_text  # never itself
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CurrentModelPicker))
        assert not any(c[0] == "use_model" for c in backend.calls)


async def test_a_slow_gateway_never_holds_up_a_key() -> None:
    backend = FakeBackend()
    gate = threading.Event()
    real = backend.gateway_report
    backend.gateway_report = lambda: (gate.wait(10), real())[1]  # type: ignore[method-assign]
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.gateway_report is None  # still asking, and the panel answered the key
        gate.set()
        await wait_for(pilot, lambda: app.gateway_report is not None)


def test_reader_against_a_real_gateway(tmp_path) -> None:
    """read_gateway and use_model on a real store, a real gateway on 127.0.0.1, then the gateway gone."""
    from koboldtui.cli import main
    from koboldtui.gateway.wiring import make_gateway
    from koboldtui.paths import app_paths
    from koboldtui.store.db import open_database
    from koboldtui.tui.gateway_probe import read_gateway
    from koboldtui.gateway.current_model import use_model
    from tests.gateway_harness import running_gateway
    from tests.instance_harness import free_port

    port = free_port()
    assert main(["instance", "add", "a", "--port", str(free_port()), "--alias", "chat"]) == 0
    assert main(["gateway", "enable", "--port", str(port)]) == 0
    paths = app_paths()
    conn = open_database(paths.database)
    use_model(conn, paths.secrets_file, "chat")
    with httpx.Client(trust_env=False) as client:
        with running_gateway(make_gateway(paths), port):
            report = read_gateway(conn, paths.secrets_file, client)
            assert report.state == "answering" and report.url == f"http://127.0.0.1:{port}"
            assert report.status["pools"] == {"chat": ["a"]} and report.current_model == "chat"
            assert report.choices == (("a", "instance"), ("chat", "pool"))
        gone = read_gateway(conn, paths.secrets_file, client)
        assert gone.state == "not answering" and gone.reason and gone.current_model == "chat"


async def test_u_with_nothing_to_choose_says_so_instead_of_an_empty_picker() -> None:
    app = make_app(FakeBackend(instances=False), first_run=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await gateway_drawn(pilot, app)
        await pilot.press("u")
        await pilot.pause()
        assert not isinstance(app.screen, CurrentModelPicker)
        assert any("No instance or pool to choose" in n.message for n in app._notifications)
