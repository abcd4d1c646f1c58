"""The panel with command and remote instances: the form's kind fields, and rows that show what each server says."""

from __future__ import annotations

from textual.widgets import Select, Static

from koboldtui.config import ServeConfig
from koboldtui.control.flavour import FlavourFacts
from koboldtui.tui.backend import InstanceDraft
from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from tests.test_tui_dashboard import make_app, repoll, settle, wait_for
from tests.test_tui_forms import open_new_form, set_input, static_text
from tests.tui_fakes import FakeBackend


async def test_form_kind_fields_are_checked_and_saved() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        assert not form.query_one("#command-fields").display  # a serve instance: no command line
        form.query_one("#kind", Select).value = "command"
        await pilot.pause()
        assert form.query_one("#command-fields").display and not form.query_one("#remote-fields").display
        await set_input(pilot, form, "#name", "img")
        await set_input(pilot, form, "#port", "5010")
        await set_input(pilot, form, "#command", "koboldcpp --port 5010 --sdmodel /m/sd.safetensors")
        await wait_for(pilot, lambda: "free" in static_text(form, "#port-msg"))
        await pilot.press("ctrl+s")
        assert "put {port} where the server takes its port" in static_text(form, "#form-errors")
        await set_input(pilot, form, "#command", "koboldcpp --port {port} --sdmodel /m/sd.safetensors")
        await set_input(pilot, form, "#health", "/api/extra/version")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: ("save_instance", "img", None) in backend.calls)
        draft = backend.drafts["img"]
        assert (draft.kind, draft.health, draft.url) == ("command", "/api/extra/version", "")
        assert draft.command == "koboldcpp --port {port} --sdmodel /m/sd.safetensors"


async def test_remote_form_needs_a_url_not_a_free_port() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await set_input(pilot, form, "#name", "box2")
        await set_input(pilot, form, "#port", "5001")  # taken here, but a remote port is elsewhere
        form.query_one("#kind", Select).value = "remote"
        await pilot.pause()
        await set_input(pilot, form, "#url", "gpu-box:5001")
        await pilot.press("ctrl+s")
        errors = static_text(form, "#form-errors")
        assert "url: use http://host:port" in errors and "port:" not in errors
        await set_input(pilot, form, "#url", "http://gpu-box:5001")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: ("save_instance", "box2", None) in backend.calls)
        assert backend.drafts["box2"].kind == "remote"
        assert backend.drafts["box2"].url == "http://gpu-box:5001"


async def test_rows_show_what_a_foreign_server_says_and_nothing_invented() -> None:
    backend = FakeBackend()
    backend.drafts["text"] = InstanceDraft(ServeConfig(name="text", port=5005), kind="command",
                                           command="llama-server --port {port}")
    backend.states["text"] = "ready"
    backend.facts["text"] = FlavourFacts("llama-server", model="llama-3b.gguf", busy=True, queue=1,
                                         slots_busy=2, slots_total=4, tokens_per_s=12.5)
    backend.drafts["img"] = InstanceDraft(ServeConfig(name="img", port=5006), kind="command",
                                          command="koboldcpp --port {port}")
    backend.states["img"] = "ready"
    backend.facts["img"] = FlavourFacts("koboldcpp", model="sd15", busy=False, queue=0, images_done=7)
    backend.drafts["box2"] = InstanceDraft(ServeConfig(name="box2", port=5001), kind="remote",
                                           url="http://10.0.0.2:5001")
    backend.vram["text"] = 3.25 * 1024
    backend.states["box2"] = "unreachable"
    backend.errors["box2"] = "http://10.0.0.2:5001 did not answer (timed out)"
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one(InstancesTable)
        text = table.cells("text")
        assert "llama-3b.gguf" in text[1] and "ready" in text[-1] and "busy" in text[-1]
        assert text[3] == "CPU · 3.2G"  # VRAM its processes hold, by pid
        assert "idle" in table.cell("img", "state")
        assert "unreachable" in table.cell("box2", "state")
        assert "did not answer" in table.cell("box2", "state")  # why, in the row
        batch = app.screen.query_one(BatchTable)
        assert batch.cells("text")[1:] == ("-", "-", "▮▮▯▯ 2/4", "-")  # its slots; no n_batch to show
        assert batch.cells("img")[1:] == ("-", "-", "-", "-")  # KoboldCpp reports no slots
        app.select_instance("img")
        await repoll(pilot, app)
        title = str(app.screen.query_one("#horde-title", Static).render())
        assert "koboldcpp · idle · queue 0 · 7 images" in title
        app.select_instance("box2")
        await repoll(pilot, app)
        assert "unreachable" in str(app.screen.query_one("#horde-title", Static).render())
        details = str(app.screen.query_one("#horde-details", Static).render())
        assert "did not answer (timed out)" in details


def add_kinds(backend: FakeBackend) -> None:
    """A command instance, a remote one and a koboldtui instance that failed before launch."""
    backend.drafts["kcpp"] = InstanceDraft(ServeConfig(name="kcpp", port=5005), kind="command",
                                           command="/opt/kcpp/koboldcpp --port {port} --model /m/a.gguf")
    backend.drafts["box2"] = InstanceDraft(ServeConfig(name="box2", port=5001), kind="remote",
                                           url="http://gpu-box:5001")
    backend.drafts["ghost"] = InstanceDraft(ServeConfig(name="ghost", port=5009))
    backend.states.update(kcpp="ready", box2="ready", ghost="failed")
    backend.errors["ghost"] = "port 5009 is taken by pid 4242 (python3); pick another port in the port field (e)"


async def test_a_failure_stays_in_its_row_until_d_dismisses_it_and_details_offer_only_what_works() -> None:
    from koboldtui.tui.screens.instance_detail import InstanceDetailScreen
    from tests.tui_fakes import screen_text

    backend = FakeBackend()
    add_kinds(backend)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one(InstancesTable)
        assert "failed[/]: port 5009 is taken" in str(table.cell("ghost", "state"))
        await repoll(pilot, app)
        assert "failed[/]: port 5009 is taken" in str(table.cell("ghost", "state"))  # kept, not a toast only
        assert table.cell("kcpp", "model") == "koboldcpp"  # its program, never "bundled"
        assert table.cell("box2", "address") == "gpu-box:5001"
        app.select_instance("ghost")
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceDetailScreen))
        await wait_for(pilot, lambda: "port 5009 is taken" in screen_text(app) and "d dismiss" in screen_text(app))
        await pilot.press("d")
        await wait_for(pilot, lambda: ("dismiss_failure", "ghost") in backend.calls)
        await wait_for(pilot, lambda: str(table.cell("ghost", "state")).endswith("stopped[/]"))
        app.select_instance("kcpp")
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceDetailScreen))
        await wait_for(pilot, lambda: "/opt/kcpp/koboldcpp --port {port}" in screen_text(app))
        text = screen_text(app)
        assert "s start" not in text and "context" not in text and "batch size" not in text  # running, not serve
        await pilot.press("s")  # not offered: does nothing
        await pilot.pause()
        assert ("start_instance", "kcpp") not in backend.calls
        await pilot.press("escape")
        for key, words in (("b", "command field"), ("m", "command field"), ("w", "koboldtui serve")):
            await pilot.press(key)
            await wait_for(pilot, lambda: any(words in str(n.message) for n in app._notifications))
            assert app.screen.id == "dashboard"  # refused before any picker or question
        app.select_instance("box2")
        await pilot.pause()
        await pilot.press("m")
        await wait_for(pilot, lambda: any("chosen on its own machine" in str(n.message) for n in app._notifications))
        assert app.screen.id == "dashboard" and not any(c[0] == "switch_model" for c in backend.calls)
