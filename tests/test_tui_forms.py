"""Pilot tests of the forms and screens: validation messages, saves, streaming, switching."""

from __future__ import annotations

import threading
from dataclasses import replace

from textual.widgets import Input, Static, TextArea

from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from koboldtui.tui.screens.log_view import LogScreen
from koboldtui.tui.screens.pickers import BatchFormScreen, ModelPickerScreen
from koboldtui.tui.screens.prompt import PromptScreen
from tests.test_tui_dashboard import make_app, repoll, settle, wait_for
from tests.tui_fakes import FakeBackend


def static_text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def open_new_form(pilot, app, filled: bool = True):
    """Press ``n`` on a settled dashboard; wait for the form (and, if ``filled``, the backend's draft)."""
    await settle(pilot, app)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, InstanceFormScreen) and app.screen.is_mounted
                   and not (filled and app.screen.draft_pending))
    return app.screen


async def set_input(pilot, screen, selector: str, value: str) -> None:
    field = screen.query_one(selector, Input)
    field.value = value
    await pilot.pause()


async def test_new_instance_form_validates_live_and_creates_on_save() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await set_input(pilot, form, "#port", "5002")
        await wait_for(pilot, lambda: "taken by pid 4242" in static_text(form, "#port-msg"))
        await set_input(pilot, form, "#port", "99999")
        await wait_for(pilot, lambda: "1-65535" in static_text(form, "#port-msg"))
        await set_input(pilot, form, "#name", "main")
        await pilot.press("ctrl+s")
        errors = static_text(form, "#form-errors")
        assert "exists already" in errors and "port" in errors
        assert app.screen is form  # not saved
        await set_input(pilot, form, "#name", "writer")
        await set_input(pilot, form, "#port", "5010")
        await wait_for(pilot, lambda: "free" in static_text(form, "#port-msg"))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: ("start_instance", "writer") in backend.calls)
        assert ("save_instance", "writer", None) in backend.calls
        assert backend.drafts["writer"].config.port == 5010


async def test_fit_estimate_follows_gpu_layers_as_you_type() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await set_input(pilot, form, "#gpu_layers", "20")
        await wait_for(pilot, lambda: "fits" in form.fit_text and "does not" not in form.fit_text)
        await set_input(pilot, form, "#gpu_layers", "200")
        await wait_for(pilot, lambda: "does not fit" in form.fit_text)
        await set_input(pilot, form, "#gpu_layers", "0")
        await wait_for(pilot, lambda: "CPU only" in form.fit_text)


async def test_horde_enabled_without_key_is_refused_with_what_to_do() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await set_input(pilot, form, "#name", "lender")
        form.query_one("#horde_enabled").value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        errors = static_text(form, "#form-errors")
        assert "needs an API key" in errors and "needs a name" in errors


async def test_edit_form_saves_and_restarts_a_running_instance() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceFormScreen))
        form = app.screen
        assert form.query_one("#port", Input).value == "5001"
        await wait_for(pilot, lambda: "free" in static_text(form, "#port-msg"))  # its own port is fine
        await set_input(pilot, form, "#ctx", "8192")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: ("restart_instance", "main") in backend.calls)
        assert backend.drafts["main"].config.ctx == 8192


async def test_gpu_priority_moves_toggles_and_saves_at_once() -> None:
    backend = FakeBackend()
    first, second = backend.gpus[0].uuid, backend.gpus[1].uuid
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, GpuPriorityScreen))
        screen = app.screen
        assert f"CUDA_VISIBLE_DEVICES={first},{second}" in static_text(screen, "#cvd")
        await pilot.press("down", "shift+up")
        await wait_for(pilot, lambda: screen.saves == 1)
        assert backend.calls[-1] == ("set_gpu_order", (second, first))
        assert f"CUDA_VISIBLE_DEVICES={second},{first}" in static_text(screen, "#cvd")
        await pilot.press("down", "space")  # disable the (now second) RTX 4090
        await wait_for(pilot, lambda: screen.saves == 2)
        assert backend.calls[-1] == ("set_gpu_enabled", first, False)
        assert f"CUDA_VISIBLE_DEVICES={second}" in static_text(screen, "#cvd")
        assert first not in static_text(screen, "#cvd")
        await pilot.press("escape")
        assert app.screen.id == "dashboard"


async def test_prompt_streams_tokens_and_restarts_the_countdown() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        screen = app.screen
        await pilot.press("enter")
        assert "type a prompt first" in static_text(screen, "#prompt-status")
        await pilot.press(*"Hi", "enter")
        await wait_for(pilot, lambda: "done" in static_text(screen, "#prompt-status"))
        assert screen.query_one(TextArea).text == "Once upon a time."
        assert ("stream_prompt", "main", "Hi") in backend.calls
        status = static_text(screen, "#prompt-status")
        assert "5 tokens" in status and "first after" in status and "tok/s" in status
        screen.query_one("#prompt-max", Input).value = "64"
        screen.query_one("#prompt-temp", Input).value = "hot"
        screen.query_one("#prompt-input", Input).focus()
        await pilot.press("enter")
        assert "temperature must be a number" in static_text(screen, "#prompt-status")
        screen.query_one("#prompt-temp", Input).value = "0.3"
        await pilot.press("enter")
        await wait_for(pilot, lambda: backend.last_sampling == (64, 0.3))
        await pilot.press("escape")
        await repoll(pilot, app)
        from koboldtui.tui.widgets.countdown import LocalPriorityCountdown

        assert app.screen.query_one(LocalPriorityCountdown).resets == 1


async def test_log_view_shows_the_instance_log() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen) and app.screen.lines)
        screen = app.screen
        assert len(screen.shown) == 30 and "line 29" in screen.shown[-1]
        backend.log.append("line 30: slot 0 released")
        await pilot.press("r")
        await wait_for(pilot, lambda: len(screen.shown) == 31)


async def test_batch_form_shows_ubatch_and_reloads_with_new_size() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, BatchFormScreen))
        screen = app.screen
        screen.query_one(Input).value = "2048"
        await pilot.pause()
        assert "min(2048, 1024) = 1024" in static_text(screen, "#batch-msg")
        screen.query_one(Input).value = "0"
        await pilot.pause()
        assert "between 1 and 65536" in static_text(screen, "#batch-msg")
        await pilot.press("enter")
        assert app.screen is screen  # invalid: stays open
        screen.query_one(Input).value = "2048"
        await pilot.press("enter")  # main has 4 requests in flight: the reload asks first
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "4 requests in flight (2 local, 2 Horde) will be aborted" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: ("set_batch_size", "main", 2048) in backend.calls)


async def test_model_key_picks_confirms_and_switches_with_progress() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen) and app.screen.models)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Mistral-7B" in app.screen.question and "4 requests in flight" in app.screen.question
        await pilot.press("y")  # requests in flight: the default answer is no
        target = "/models/Mistral-7B-Instruct-v0.3-Q5_K_M.gguf"
        await wait_for(pilot, lambda: ("switch_model", "main", target) in backend.calls)
        await wait_for(pilot, lambda: app.screen.id == "dashboard")
        assert backend.drafts["main"].config.model == target


async def test_palette_lists_catalogue_models_for_switching() -> None:
    from textual.command import CommandPalette

    from koboldtui.tui.palette import ModelSwitchProvider

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        provider = ModelSwitchProvider(app.screen)
        await provider.startup()
        titles = [hit.text async for hit in provider.search("llama")]
        assert any("Switch main to Llama-3.1-8B" in str(t) for t in titles)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))


async def test_a_failed_gpu_save_is_reported_and_the_panel_keeps_running() -> None:
    backend = FakeBackend()

    def vanished(uuid: str, enabled: bool) -> str:
        raise LookupError(f"GPU {uuid} is no longer known: reopen the GPU screen")

    backend.set_gpu_enabled = vanished  # type: ignore[method-assign]
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, GpuPriorityScreen))
        await pilot.press("space")
        await wait_for(pilot, lambda: any("could not save" in n.message for n in app._notifications))
        assert app.is_running and isinstance(app.screen, GpuPriorityScreen)


async def test_a_second_prompt_replaces_the_first_stream() -> None:
    import threading

    backend = FakeBackend()
    release = threading.Event()

    def slow_then_fast(instance: str, prompt: str, max_tokens: int, temperature=None):
        backend.calls.append(("stream_prompt", instance, prompt))
        if prompt == "first":
            yield "old-1 "
            release.wait(5)
            yield from ("old-2 ", "old-3 ")
        else:
            yield from ("new", " text")
            release.set()

    backend.stream_prompt = slow_then_fast  # type: ignore[method-assign]
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        screen = app.screen
        await pilot.press(*"first", "enter")
        await wait_for(pilot, lambda: "old-1" in screen.query_one(TextArea).text)
        screen.query_one(Input).value = ""
        await pilot.press(*"second", "enter")
        await wait_for(pilot, lambda: "done" in static_text(screen, "#prompt-status"))
        await pilot.pause(0.2)
        assert screen.query_one(TextArea).text == "new text"


async def test_form_errors_sit_next_to_their_fields_in_the_panels_words() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await set_input(pilot, form, "#name", "lender")
        await set_input(pilot, form, "#parallel", "0")
        await set_input(pilot, form, "#threads", "-2")
        form.query_one("#horde_enabled").value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        assert "parallel slots (e) 0 must be between 1 and 256" in static_text(form, "#parallel-msg")
        assert "at least 1" in static_text(form, "#threads-msg")
        assert "Horde API key field" in static_text(form, "#horde_key-msg")
        assert "--" not in static_text(form, "#form-errors")  # no CLI flags in the panel
        await set_input(pilot, form, "#parallel", "2")
        await set_input(pilot, form, "#threads", "3")
        form.query_one("#horde_enabled").value = False
        form.query_one("#auto_restart").value = False
        form.query_one("#autostart").value = False
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "lender" in backend.drafts)
        draft = backend.drafts["lender"]
        assert draft.config.threads == 3 and not draft.auto_restart and not draft.autostart


def slow_default_draft(backend: FakeBackend, port: int) -> threading.Event:
    """The backend's new-instance draft waits for the returned gate (and says a port the guess cannot know)."""
    gate = threading.Event()
    real = backend.default_draft

    def slow():
        gate.wait(10)
        draft = real()
        return replace(draft, config=replace(draft.config, port=port, ctx=8192))

    backend.default_draft = slow  # type: ignore[method-assign]
    return gate


async def test_the_form_opens_before_the_backend_answers_and_keeps_what_was_typed() -> None:
    backend = FakeBackend()
    gate = slow_default_draft(backend, 5007)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app, filled=False)
        assert form.draft_pending  # open at once, on the guess
        name = form.query_one("#name", Input)
        assert name.has_focus
        await pilot.press("ctrl+u", *"writer")  # typed while the backend is still busy
        assert name.value == "writer"
        gate.set()
        await wait_for(pilot, lambda: not form.draft_pending)
        await pilot.pause()
        assert name.value == "writer" and name.has_focus  # typing kept, focus not stolen
        assert form.query_one("#port", Input).value == "5007"  # untouched fields take the backend's values
        assert form.query_one("#ctx", Input).value == "8192"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: ("start_instance", "writer") in backend.calls)
        assert backend.drafts["writer"].config.port == 5007


async def test_save_before_the_backend_answered_waits_for_it_and_never_stores_the_guess() -> None:
    backend = FakeBackend()
    gate = slow_default_draft(backend, 5009)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app, filled=False)
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert app.screen is form and not [c for c in backend.calls if c[0] == "save_instance"]
        assert "reading the settings" in static_text(form, "#form-errors")
        gate.set()
        await wait_for(pilot, lambda: any(c[0] == "save_instance" for c in backend.calls))
        saved = next(d for d in backend.drafts.values() if d.config.port == 5009)
        assert saved.config.ctx == 8192


async def test_a_draft_that_cannot_be_read_closes_the_form_with_why() -> None:
    backend = FakeBackend()

    def broken(name: str):
        raise RuntimeError("the instance store is locked")

    backend.draft_for = broken  # type: ignore[method-assign]
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("e")
        await wait_for(pilot, lambda: any("store is locked" in str(n.message) for n in app._notifications))
        await wait_for(pilot, lambda: not isinstance(app.screen, InstanceFormScreen))
        assert app.is_running and app.faults == []
