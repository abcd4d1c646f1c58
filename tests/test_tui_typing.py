"""Every field of every form, typed into as a person does (keys through the pilot, never values
set in code), at 80×24 and 120×40: the typed text must be on screen and saved (issue 19)."""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea

from koboldtui.models.bundled import bundled_model_path
from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from koboldtui.tui.screens.pickers import BatchFormScreen
from koboldtui.tui.screens.prompt import PromptScreen
from koboldtui.tui.widgets.queue_table import QueueTable
from tests.test_tui_dashboard import make_app, settle, wait_for
from tests.tui_fakes import FakeBackend, screen_text

SIZES = [(80, 24), (120, 40)]
KEY_OF = {" ": "space", "/": "slash", ":": "colon", "{": "left_curly_bracket", "}": "right_curly_bracket",
          "-": "minus", ".": "full_stop", "_": "underscore"}


async def focus(pilot, app, field_id: str, limit: int = 80) -> None:
    """Tab (as a person does) until ``field_id`` has focus."""
    for _ in range(limit):
        if app.focused is not None and app.focused.id == field_id:
            return
        await pilot.press("tab")
    raise AssertionError(f"tab never reached #{field_id}")


async def type_into(pilot, app, field_id: str, text: str) -> None:
    """Focus a field by Tab, clear it with keys, type ``text`` key by key, and check it shows."""
    await focus(pilot, app, field_id)
    await pilot.press("end", "ctrl+u", *[KEY_OF.get(c, c) for c in text])
    await pilot.pause()
    field = app.screen.query_one(f"#{field_id}", Input)
    assert field.value == text, (field_id, field.value)
    if not field.password:
        try:  # visible, not hidden under another widget
            await wait_for(pilot, lambda: text in screen_text(app))
        except AssertionError:
            raise AssertionError(f"#{field_id}: {text!r} not on screen:\n{screen_text(app)}") from None


async def pick_kind(pilot, app, kind: str) -> None:
    """Open the kind select with enter and choose with the arrows."""
    await focus(pilot, app, "kind")
    order = ["serve", "command", "remote"]
    await pilot.press("enter")
    await pilot.pause()
    await pilot.press("home", *["down"] * order.index(kind), "enter")
    await wait_for(pilot, lambda: app.screen.query_one("#kind").value == kind)


async def open_form(pilot, app) -> InstanceFormScreen:
    await settle(pilot, app)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, InstanceFormScreen) and app.screen.is_mounted
                   and not app.screen.draft_pending and app.screen.later.composed)
    await wait_for(pilot, lambda: app.screen.port_checked)
    return app.screen


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_command_instance_is_typed_in_and_saved(size) -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=size) as pilot:
        form = await open_form(pilot, app)
        await type_into(pilot, app, "name", "kcpp")
        await pick_kind(pilot, app, "command")
        await type_into(pilot, app, "command", "koboldcpp --port {port}")
        await type_into(pilot, app, "health", "/api/v1/model")
        await type_into(pilot, app, "port", "5077")
        await wait_for(pilot, lambda: "free" in str(form.query_one("#port-msg").render()))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "kcpp" in backend.drafts)
        saved = backend.drafts["kcpp"]
        assert (saved.kind, saved.command, saved.health, saved.config.port) == (
            "command", "koboldcpp --port {port}", "/api/v1/model", 5077)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_remote_instance_is_typed_in_saved_and_not_started(size) -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=size) as pilot:
        await open_form(pilot, app)
        await type_into(pilot, app, "name", "box2")
        await pick_kind(pilot, app, "remote")
        await type_into(pilot, app, "url", "http://gpu-box:5001")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "box2" in backend.drafts)
        assert backend.drafts["box2"].url == "http://gpu-box:5001" and backend.drafts["box2"].kind == "remote"
        await wait_for(pilot, lambda: any("added" in n.message for n in app._notifications))
        assert ("start_instance", "box2") not in backend.calls  # watched, never started: no "failed"
        assert not any("failed" in n.message for n in app._notifications)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_serve_field_is_typed_in_and_saved(size, tmp_path, monkeypatch) -> None:
    (tmp_path / "m.gguf").symlink_to(bundled_model_path())
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=size) as pilot:
        form = await open_form(pilot, app)
        typed = {"name": "writer", "model_path": "./m.gguf", "port": "5010", "gpu_layers": "12", "ctx": "2048",
                 "parallel": "3", "batch_size": "256", "threads": "6", "horde_name": "kobold-two",
                 "horde_key": "k3y-typed", "horde_window": "25", "horde_url": "https://horde.example"}
        for field_id, text in typed.items():
            await type_into(pilot, app, field_id, text)
        await wait_for(pilot, lambda: "✓" in str(form.query_one("#model_path-msg").render()))
        for switch in ("auto_restart", "autostart", "horde_enabled"):  # space flips a switch
            await focus(pilot, app, switch)
            before = str(form.query_one(f"#{switch}-label").render())
            await pilot.press("space")
            after = str(form.query_one(f"#{switch}-label").render())
            assert before.endswith("on") != after.endswith("on"), (before, after)  # said in words (NO_COLOR)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "writer" in backend.drafts, timeout=5)
        d = backend.drafts["writer"]
        c = d.config
        assert c.model == str(tmp_path / "m.gguf")
        assert (c.port, c.gpu_layers, c.ctx, c.parallel, c.batch_size, c.threads) == (5010, 12, 2048, 3, 256, 6)
        assert (c.horde.worker_name, c.horde.api_key, c.horde.window_s, c.horde.url) == (
            "kobold-two", "k3y-typed", 25.0, "https://horde.example")
        assert (d.auto_restart, d.autostart, c.horde.enabled) == (False, False, True)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_batch_prompt_and_queue_filter_fields_are_typed_in(size) -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, BatchFormScreen))
        await type_into(pilot, app, "n_batch", "1024")
        assert "n_ubatch = min(1024, 1024)" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))  # requests in flight: it asks
        await pilot.press("y")
        await wait_for(pilot, lambda: ("set_batch_size", "main", 1024) in backend.calls)
        await wait_for(pilot, lambda: app.screen.id == "dashboard")
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await type_into(pilot, app, "prompt-max", "64")
        await type_into(pilot, app, "prompt-temp", "0.3")
        await type_into(pilot, app, "prompt-input", "Hi there")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen.query_one(TextArea).text == "Once upon a time.")
        assert backend.last_sampling == (64, 0.3) and ("stream_prompt", "main", "Hi there") in backend.calls
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.id == "dashboard")
        await pilot.press("slash", *"horde")
        queue = app.screen.query_one(QueueTable)
        await wait_for(pilot, lambda: queue.row_count == 2 and app.screen.query_one("#queue-filter", Input).value
                       == "horde")
        assert "horde" in screen_text(app) and "KTUIa1b2" not in screen_text(app)


async def test_ctrl_u_then_typing_in_one_read_keeps_the_typed_text() -> None:
    """Issue 19 point 9: keys that arrive in one read from the terminal (as tmux send-keys C-u ab
    delivers them) are posted together; the text typed after ctrl+u must survive."""
    from textual import events

    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(pilot, app)
        await focus(pilot, app, "name")
        for _ in range(5):
            for key, char in (("ctrl+u", "\x15"), ("a", "a"), ("b", "b")):
                app.post_message(events.Key(key, char))  # as the driver does, without waiting in between
            await pilot.pause(0.1)
            assert app.screen.query_one("#name", Input).value == "ab"
