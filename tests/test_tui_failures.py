"""Failures where the eye is: the reason in the row, a toast on the change, details on Enter,
a log that wraps, follows and searches, and Horde words that never contradict each other."""

from __future__ import annotations

from koboldtui.tui.failure_reason import short_reason
from koboldtui.tui.panel_words import panel_words
from koboldtui.tui.screens.instance_detail import InstanceDetailScreen
from koboldtui.tui.screens.log_view import LogScreen, line_level, matching
from koboldtui.tui.widgets.countdown import LocalPriorityCountdown
from koboldtui.tui.widgets.instance_tables import InstancesTable
from tests.test_tui_dashboard import make_app, repoll, settle, wait_for
from tests.tui_fakes import FakeBackend, screen_text

LOAD_FAILURE = (
    "exited with code 1; restarting in 4 s\nlast log lines:\n"
    "  2026-12-03 10:00:01 INFO koboldtui.serve: loading /models/broken.gguf\n"
    "  llama_model_load: error loading model: tensor 'blk.0.attn_q.weight' data is not within the file bounds\n"
    "  2026-12-03 10:00:02 ERROR koboldtui.serve: the model failed to load"
)


def test_short_reason_names_the_exit_and_the_telling_log_line() -> None:
    reason = short_reason(LOAD_FAILURE, width=200)
    assert reason.startswith("exited with code 1; restarting in 4 s — ")
    assert "the model failed to load" in reason
    assert short_reason(None) == "no reason recorded: see the log (l)"
    assert len(short_reason(LOAD_FAILURE, width=40)) == 40


def test_cli_words_become_panel_words() -> None:
    assert panel_words("the Horde worker needs an API key: pass --horde-key (or KOBOLDTUI_HORDE_KEY)") == \
        "the Horde worker needs an API key: fill in the Horde API key field of the form (e)"
    assert "Z on the dashboard" in panel_words(
        'clear it from the panel (POST /api/koboldtui/horde/maintenance {"on": false}) or on the site')
    assert panel_words("--parallel 0 must be between 1 and 256") == "parallel slots (e) 0 must be between 1 and 256"


def test_log_lines_are_classed_and_searched() -> None:
    assert line_level("llama_model_load: error loading model") == "error"
    assert line_level("WARNING: n_ctx_train < n_ctx") == "warning"
    assert line_level("slot 0 released") is None
    assert matching(["a Error b", "ok", "ERROR c"], "error") == ["a Error b", "ERROR c"]


async def test_a_failure_shows_in_the_row_as_a_toast_and_in_the_details() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        backend.states["chat-cpu"] = "failed"
        backend.errors["chat-cpu"] = LOAD_FAILURE
        await repoll(pilot, app)
        cell = str(app.screen.query_one(InstancesTable).cell("chat-cpu", "state"))
        assert "failed" in cell and "exited with code 1" in cell
        toasts = [str(n.message) for n in app._notifications]
        assert any("chat-cpu failed: exited with code 1" in t for t in toasts), toasts
        await repoll(pilot, app)  # still failed: no second toast
        assert sum("chat-cpu failed" in str(n.message) for n in app._notifications) == 1
        await pilot.press("5", "down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceDetailScreen) and app.screen.tail)
        text = screen_text(app)
        assert "data is not within the file bounds" in text  # the log line, wrapped, not cut off
        assert "parallel slots 2" in text
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.lines)


async def test_the_details_of_a_running_instance_say_what_it_uses() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:  # 80 columns: the table drops RSS/CPU/cached
        await settle(pilot, app)
        app.select_instance("main")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceDetailScreen) and app.screen.tail)
        usage = str(app.screen.query_one("#detail-usage").render())
        assert "RSS 1.2G" in usage and "CPU 187%" in usage and "41.5 tok/s" in usage, usage
        assert "requests 57 (51 done" in usage, usage
        await pilot.press("escape")
        app.select_instance("chat-cpu")  # stopped
        await pilot.pause(0.1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceDetailScreen) and app.screen.tail)
        assert not app.screen.query("#detail-usage")  # stopped: nothing to measure


async def test_log_view_searches_with_slash_and_follows() -> None:
    backend = FakeBackend()
    backend.log += ["WARNING: something odd", "llama_model_load: error loading model: " + "x" * 200]
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.lines)
        screen = app.screen
        await pilot.press("slash", *"error")
        await wait_for(pilot, lambda: len(screen.shown) == 1)
        assert "error loading model" in screen.shown[0]
        assert "1 of 32 lines match" in screen_text(app)
        await pilot.press("escape")  # clears the search first
        await wait_for(pilot, lambda: len(screen.shown) == 32)
        assert screen.following
        await pilot.press("f")
        assert not screen.following and "paused" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.id == "dashboard")


async def test_horde_words_never_contradict_the_worker_state() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        countdown = app.screen.query_one(LocalPriorityCountdown)
        assert countdown.enabled and "Horde waits" in str(countdown.render())
        height = app.screen.query_one("#horde").outer_size.height  # the row's, beside the GPU card
        for state, words in (("error", "stopped by the error below"), ("maintenance", "Z clears it"),
                             ("stopped", "w starts it")):
            backend.horde_state = state
            await repoll(pilot, app)
            text = str(countdown.render())
            assert not countdown.enabled and words in text and "may take jobs" not in text
        backend.horde_state = "error"
        await repoll(pilot, app)
        assert "submit timed out" in screen_text(app)  # the error that stopped it
        backend.horde_state = "idle"
        await repoll(pilot, app)
        assert "submit timed out" not in screen_text(app)  # recovered: no stale red error
        horde = app.screen.query_one("#horde")
        assert horde.outer_size.height == height >= 8  # whatever it said, the card never grew


async def test_horde_view_lists_every_worker_with_history() -> None:
    from koboldtui.tui.screens.horde_view import HordeScreen

    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await repoll(pilot, app)
        await pilot.press("H")
        await wait_for(pilot, lambda: isinstance(app.screen, HordeScreen))
        text = screen_text(app)
        assert "Horde contribution" in text and "paused for local requests" in text
        assert "1,840" in text and "52,311" in text
        assert "max_context_length 3" in text  # what the worker can say about requests it did not get
        assert len(app.horde_history.workers["main"].kudos) == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.id == "dashboard")


def test_messages_from_the_cli_layers_name_the_panels_fields_and_keys() -> None:
    """Issue 19 point 5: every message below used to reach the panel in CLI words."""
    import re


    said = {
        "port 5001 is taken by pid 9 (python3): stop it, or pick another port with "
        "`koboldtui instance edit NAME --port P`": "the port field of the form (e)",
        "the Horde worker needs a name: pass --horde-name NAME": "the worker name field of the form (e)",
        "this instance runs no Horde worker: restart it with --horde --horde-name NAME "
        "and the key in KOBOLDTUI_HORDE_KEY (or --horde-key)": "switch the Horde worker on in the form (e)",
        "cannot start 'ghost': the program 'kcpp' was not found (not on PATH, or not executable); give its "
        "full path with `koboldtui instance edit ghost --cmd \"...\"`": "the command field of the form (e)",
        "the worker name belongs to another Horde user (WrongCredentials): pick another name with --horde-name":
            "the worker name field (e)",
        "cannot start 'a': the model does not fit in VRAM (GPU 0 has 1 GiB free: lower --gpu-layers to 3 or "
        "pick another GPU); change it with `koboldtui instance edit a ...`": "the form (e)",
    }
    for cli, panel in said.items():
        words = panel_words(cli)
        assert panel in words, words
        assert not re.search(r"--[a-z]|koboldtui instance|KOBOLDTUI_", words), words
