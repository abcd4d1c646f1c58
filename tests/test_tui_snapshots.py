"""Snapshot tests of the main screens at 80×24 and 120×40, the dashboard also at 200×60 (fake GPUs/Horde,
fixed clock, no blink).

Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from koboldtui.tui.app import KoboldPanel
from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from tests.tui_fakes import FakeBackend, FakeClock

SIZES = [(80, 24), (120, 40)]
DASHBOARD_SIZES = [*SIZES, (200, 60)]  # 200x60: the side-by-side layout of wide terminals


class SnapshotPanel(KoboldPanel):
    """The panel without the dashboard's scrollbar: its thumb follows a virtual height that can
    settle a frame late under load, which made the 80x24 pictures flaky (the text was identical)."""

    CSS = "#dash { scrollbar-size-vertical: 0; }"


def panel(gpus: bool = True) -> KoboldPanel:
    return SnapshotPanel(FakeBackend(gpus=gpus), clock=FakeClock(), refresh_s=3600, gpu_refresh_s=3600,
                       countdown_tick_s=None, theme_name="kobold")


async def drawn(pilot) -> None:
    """Wait for the first polls, then stop every cursor blinking so frames are stable."""
    app = pilot.app
    for _ in range(300):
        if app.polls_done and app.gpu_polls_done and app.gateway_report is not None:
            break
        await pilot.pause(0.01)
    await settled(pilot)


async def settled(pilot) -> None:
    """Wait until the dashboard's layout stops changing (cards mounted, heights final).

    """
    dash = pilot.app.screen_stack[0].query_one("#dash")
    last, same = None, 0
    for _ in range(200):
        await pilot.pause(0.02)
        size = (dash.virtual_size, dash.scroll_offset, len(pilot.app.screen_stack))
        same = same + 1 if size == last else 0
        last = size
        if same >= 3:
            return


def no_blink(app) -> None:
    for field in app.screen.query(Input):
        field.cursor_blink = False


@pytest.mark.parametrize("size", DASHBOARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_with_gpus(snap_compare, size) -> None:
    assert snap_compare(panel(), terminal_size=size, run_before=drawn)


@pytest.mark.parametrize("size", DASHBOARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_cpu_only(snap_compare, size) -> None:
    assert snap_compare(panel(gpus=False), terminal_size=size, run_before=drawn)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_instance_form(snap_compare, size) -> None:
    async def open_form(pilot) -> None:
        await drawn(pilot)
        await pilot.press("n")
        app = pilot.app
        for _ in range(300):
            if isinstance(app.screen, InstanceFormScreen) and not app.screen.draft_pending and app.screen.fit_text \
                    and app.screen.port_message is None \
                    and "free" in str(app.screen.query_one("#port-msg").render()):
                break
            await pilot.pause(0.01)
        no_blink(app)
        await settled(pilot)

    assert snap_compare(panel(), terminal_size=size, run_before=open_form)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gpu_priority(snap_compare, size) -> None:
    async def open_priority(pilot) -> None:
        await drawn(pilot)
        await pilot.press("g")
        for _ in range(300):
            if isinstance(pilot.app.screen, GpuPriorityScreen):
                break
            await pilot.pause(0.01)
        await settled(pilot)

    assert snap_compare(panel(), terminal_size=size, run_before=open_priority)


def test_horde_view(snap_compare) -> None:
    async def open_view(pilot) -> None:
        await drawn(pilot)
        await pilot.press("H")
        for _ in range(300):
            if type(pilot.app.screen).__name__ == "HordeScreen":
                break
            await pilot.pause(0.01)
        await pilot.pause(0.1)

    assert snap_compare(panel(), terminal_size=(120, 40), run_before=open_view)


def test_failed_instance_detail(snap_compare) -> None:
    async def open_detail(pilot) -> None:
        app = pilot.app
        await drawn(pilot)
        app.backend.states["chat-cpu"] = "failed"
        app.backend.errors["chat-cpu"] = (
            "exited with code 1\nlast log lines:\n  llama_model_load: error loading model: bad magic")
        before = app.polls_done
        app.poll_now()
        for _ in range(300):
            if app.polls_done > before:
                break
            await pilot.pause(0.01)
        app.clear_notifications()
        await pilot.press("5", "down", "enter")
        for _ in range(300):
            if type(app.screen).__name__ == "InstanceDetailScreen" and app.screen.tail:
                break
            await pilot.pause(0.01)
        await pilot.pause(0.1)

    assert snap_compare(panel(), terminal_size=(120, 40), run_before=open_detail)


# issue 19: command, remote and failed instances; the form's kind fields; help --------------------------


def kinds_panel() -> KoboldPanel:
    """The fake panel plus a command instance, a remote one and one that failed before launch."""
    from tests.test_tui_kinds import add_kinds

    app = panel()
    add_kinds(app.backend)
    return app


async def quiet(pilot) -> None:
    """Drawn, with the failure toast gone (it fades on its own; a picture must not depend on when)."""
    await drawn(pilot)
    pilot.app.clear_notifications()
    await settled(pilot)


@pytest.mark.parametrize("size", DASHBOARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_with_command_remote_and_failed(snap_compare, size) -> None:
    assert snap_compare(kinds_panel(), terminal_size=size, run_before=quiet)


def form_of_kind(kind: str):
    async def open_form(pilot) -> None:
        from tests.test_tui_typing import pick_kind, type_into

        await drawn(pilot)
        app = pilot.app
        await pilot.press("n")
        for _ in range(300):
            if isinstance(app.screen, InstanceFormScreen) and not app.screen.draft_pending \
                    and app.screen.later.composed and app.screen.port_checked:
                break
            await pilot.pause(0.01)
        await pick_kind(pilot, app, kind)
        if kind == "command":
            await type_into(pilot, app, "command", "koboldcpp --port {port} --model {model}")
        else:
            await type_into(pilot, app, "url", "http://gpu-box:5001")
        no_blink(app)
        await settled(pilot)

    return open_form


@pytest.mark.parametrize("size", DASHBOARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_form_kind_command(snap_compare, size) -> None:
    assert snap_compare(panel(), terminal_size=size, run_before=form_of_kind("command"))


@pytest.mark.parametrize("size", DASHBOARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_form_kind_remote(snap_compare, size) -> None:
    assert snap_compare(panel(), terminal_size=size, run_before=form_of_kind("remote"))


@pytest.mark.parametrize("size", DASHBOARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, size, monkeypatch) -> None:
    # help names the config file: one fixed home, not the test's tmp dir, keeps the picture stable
    from koboldtui.paths import HOME_ENV

    monkeypatch.setenv(HOME_ENV, "/tmp/koboldtui-help-snapshot")

    async def open_help(pilot) -> None:
        await drawn(pilot)
        await pilot.press("question_mark")
        for _ in range(300):
            if type(pilot.app.screen).__name__ == "HelpScreen":
                break
            await pilot.pause(0.01)
        await pilot.pause(0.1)

    assert snap_compare(panel(), terminal_size=size, run_before=open_help)


# the gateway (issue 17 point 6): its row on the dashboard, its view --------------------------------


def gateway_panel() -> KoboldPanel:
    """The fake panel with the gateway enabled (its own row too) and answering."""
    from tests.test_tui_gateway_panel import with_gateway

    return SnapshotPanel(with_gateway(), clock=FakeClock(), refresh_s=3600, gpu_refresh_s=3600,
                         countdown_tick_s=None, theme_name="kobold")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_with_gateway(snap_compare, size) -> None:
    assert snap_compare(gateway_panel(), terminal_size=size, run_before=quiet)


def test_gateway_view(snap_compare) -> None:
    async def open_view(pilot) -> None:
        from koboldtui.tui.screens.gateway_screen import GatewayScreen

        await quiet(pilot)
        await pilot.press("G")
        for _ in range(100):
            if isinstance(pilot.app.screen, GatewayScreen):
                break
            await pilot.pause(0.02)
        await pilot.pause(0.1)

    assert snap_compare(gateway_panel(), terminal_size=(120, 40), run_before=open_view)
