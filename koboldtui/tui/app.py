"""The koboldtui panel app: polls the backend off the UI thread and routes keys to actions.

Polls are one-shot timers re-armed when the previous poll's message is handled, so a
slow NVML or a hung instance never piles up overlapping polls or blocks a key press.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets.data_table import RowDoesNotExist

from koboldtui.paths import AppPaths, app_paths
from koboldtui.tui import gauges
from koboldtui.tui.actions import PanelActions, active_requests
from koboldtui.tui.backend import CatalogModel, GatewayReport, GpuReport, InstanceView, PanelBackend
from koboldtui.tui.failure_reason import short_reason
from koboldtui.tui.fault_guard import FaultGuard
from koboldtui.tui.keymap import load_keymap
from koboldtui.tui.messages import CatalogLoaded, GatewayPolled, GpusPolled, InstancesPolled
from koboldtui.tui.palette import ModelSwitchProvider, PanelCommandPalette
from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.gateway_screen import CurrentModelPicker, GatewayScreen
from koboldtui.tui.screens.dashboard import DASHBOARD_BINDINGS, DashboardScreen
from koboldtui.tui.screens.help import HelpScreen, help_entries
from koboldtui.tui.screens.horde_view import HordeHistory, HordeScreen
from koboldtui.tui.themes import DEFAULT_THEME, LoadedThemes, load_themes, theme_dirs
from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from koboldtui.tui.widgets.keyed_table import KeyedTable

Clock = Callable[[], float]
THEME_SETTING = "theme"


class KoboldPanel(FaultGuard, PanelActions, App[None]):
    """The control panel; everything it knows about the world comes from ``backend``."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "koboldtui"
    COMMANDS = App.COMMANDS | {ModelSwitchProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_panel", "Quit", id="quit",
                tooltip="Leave the panel; running instances keep serving (the next panel reattaches)"),
        Binding("Q", "stop_all_and_quit", "Stop all & quit", id="quit-stop-all", show=False,
                tooltip="Stop every running instance, then leave the panel (asks first)"),
        Binding("question_mark,f1", "help", "Help", id="help", tooltip="Show every key"),
        # Textual's own keys, given ids here so help lists them and [keymap] can move them.
        Binding("ctrl+p", "command_palette", "Palette", id="command-palette", show=False, priority=True,
                tooltip="Open the command palette: every action and every model by name"),
        Binding("ctrl+q", "quit", "Quit", id="quit-ctrl", show=False, priority=True,
                tooltip="The same as q: leave the panel, instances keep running"),
    ]

    def __init__(
        self,
        backend: PanelBackend,
        *,
        clock: Clock = time.monotonic,
        refresh_s: float = 1.0,
        gpu_refresh_s: float = 1.0,
        countdown_tick_s: float | None = 0.25,
        fade_after_s: float = 10.0,
        paths: AppPaths | None = None,
        themes: LoadedThemes | None = None,
        theme_name: str | None = None,
        first_run: bool = True,
        catalog_refresh_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.clock = clock
        self.refresh_s = refresh_s
        self.gpu_refresh_s = gpu_refresh_s
        self.countdown_tick_s = countdown_tick_s
        self.fade_after_s = fade_after_s
        self.paths = paths or app_paths()
        self._init_fault_guard(self.paths.log_dir / "panel-errors.log")
        self.catalog_refresh_s = catalog_refresh_s
        self.catalog_models: list[CatalogModel] | None = None  # None until the first load
        self.catalog_error: str | None = None
        self._states: dict[str, str] = {}
        self.horde_history = HordeHistory()
        self.first_run = first_run
        self.instances: tuple[InstanceView, ...] = ()
        self.gpu_report = GpuReport()
        self.selected_instance: str | None = None
        self.stop_on_exit = False
        self.exit_message: str | None = None
        self.prompt_max_tokens = 200
        self.polls_done = 0
        self.gpu_polls_done = 0
        self._first_run_done = False
        self._instances_timer: Timer | None = None
        self._gpus_timer: Timer | None = None
        self._instances_polling = False
        self._gpus_polling = False
        self.gateway_report: GatewayReport | None = None  # None until the first gateway poll
        self.gateway_refresh_s = max(2.0, 2 * refresh_s)  # one GET of its status; a gateway is no hot path
        loaded = themes if themes is not None else load_themes(theme_dirs(self.paths))
        self.theme_problems = list(loaded.problems)
        for theme in loaded.themes:
            self.register_theme(theme)
        wanted = theme_name or DEFAULT_THEME
        if wanted in self.available_themes:
            self.theme = wanted
        elif theme_name:
            self.theme_problems.append(f"theme {theme_name!r} is not installed; using {self.theme}")
        self._keep_only_our_themes({t.name for t in loaded.themes})
        known_ids = {b.id for b in self.all_bindings() if b.id}
        keymap = load_keymap(self.paths.config_file, known_ids)
        self.keymap_overrides = keymap.keymap
        self.keymap_problems = list(keymap.problems)

    def _keep_only_our_themes(self, ours: set[str]) -> None:
        """The palette's theme list: ours, plus Textual's ANSI theme (the terminal's own colours),
        not Textual's ~20 demo themes mixed in with them (issue 19)."""
        if not ours or self.theme not in ours | {"textual-ansi"}:
            return  # no theme files loaded (or one of Textual's asked for): keep Textual's as a fallback
        for name in list(self.available_themes):
            if name not in ours and name != "textual-ansi":
                self.unregister_theme(name)

    # lifecycle -------------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return DashboardScreen(self.clock, self.countdown_tick_s, self.fade_after_s)

    def fresh_dashboard(self, generation: int) -> DashboardScreen:
        """A new dashboard to replace one whose widget died in a bug (see fault_guard)."""
        return DashboardScreen(self.clock, self.countdown_tick_s, self.fade_after_s, f"dashboard-{generation}")

    def on_mount(self) -> None:
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)
        for problem in self.theme_problems + self.keymap_problems:
            self.notify(problem, title="Config", severity="warning", timeout=8, markup=False)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._poll_instances()
        self._poll_gpus()
        self._poll_gateway()
        self.refresh_catalog()

    @classmethod
    def binding_groups(cls) -> list[tuple[str, list[Binding]]]:
        """Every binding by where it works, for the help screen and keymap validation."""
        from koboldtui.tui.screens.confirm import ConfirmScreen
        from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
        from koboldtui.tui.screens.instance_detail import InstanceDetailScreen
        from koboldtui.tui.screens.instance_form import InstanceFormScreen
        from koboldtui.tui.screens.log_view import LogScreen
        from koboldtui.tui.screens.pickers import BatchFormScreen, ModelPickerScreen
        from koboldtui.tui.screens.prompt import PromptScreen
        from koboldtui.tui.screens.switch_progress import SwitchProgressScreen

        screens = [
            ("instance form", InstanceFormScreen), ("GPU priority", GpuPriorityScreen),
            ("prompt", PromptScreen), ("log", LogScreen), ("model picker", ModelPickerScreen),
            ("batch size", BatchFormScreen), ("model switch", SwitchProgressScreen),
            ("questions", ConfirmScreen), ("help", HelpScreen), ("instance details", InstanceDetailScreen),
            ("Horde view", HordeScreen), ("gateway", GatewayScreen), ("current model picker", CurrentModelPicker),
        ]
        groups = [("anywhere", [b for b in cls.BINDINGS if isinstance(b, Binding)]),
                  ("dashboard", list(DASHBOARD_BINDINGS))]
        groups += [(where, [b for b in screen.BINDINGS if isinstance(b, Binding)]) for where, screen in screens]
        return groups

    @classmethod
    def all_bindings(cls) -> list[Binding]:
        """Every binding the help screen lists."""
        return [b for _, bindings in cls.binding_groups() for b in bindings]

    @property
    def dashboard(self) -> DashboardScreen:
        """The dashboard: the bottom screen (or the fresh one a fault reset put above it)."""
        screen = next(s for s in reversed(self.screen_stack) if isinstance(s, DashboardScreen))
        return screen

    @property
    def _shutting_down(self) -> bool:
        """True when there is no dashboard to draw on (starting up or shutting down)."""
        return not self.screen_stack or not isinstance(self.screen_stack[0], DashboardScreen)

    # polling ---------------------------------------------------------------------------
    def _poll_instances(self) -> None:
        self._instances_timer = None
        self._instances_polling = True
        self._instances_worker()

    @work(thread=True, group="poll-instances", exit_on_error=False)
    def _instances_worker(self) -> None:
        try:
            views, error = tuple(self.backend.instances()), None
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            views, error = (), f"cannot read the instances: {exc}"
        self.post_message(InstancesPolled(views, self.clock(), error))

    def on_instances_polled(self, message: InstancesPolled) -> None:
        self._instances_polling = False
        self.polls_done += 1
        if message.error:
            self.sub_title = message.error
        else:
            self._announce_failures(message.instances)
            self.horde_history.record(message.instances, message.polled_at)
            self.instances = message.instances
            if self.selected_instance not in {i.name for i in self.instances}:
                self.selected_instance = self.instances[0].name if self.instances else None
            ready = sum(1 for i in self.instances if i.state == "ready")
            count = len(self.instances)
            self.sub_title = f"{count} instance{'' if count == 1 else 's'} · {ready} ready"
            if not self._shutting_down:  # else the dashboard draws it when it mounts
                self.dashboard.show_instances(self.instances, self.selected_instance, message.polled_at)
            if not self.instances and self.first_run and not self._first_run_done:
                self._first_run_done = True
                self.create_first_instance()
        self._instances_timer = self.set_timer(self.refresh_s, self._poll_instances)

    def _announce_failures(self, instances: tuple[InstanceView, ...]) -> None:
        """A toast when an instance turns failed: the reason, and where to read more."""
        states = {i.name: i.state for i in instances}
        for inst in instances:
            before = self._states.get(inst.name)
            if inst.state == "failed" and before is not None and before != "failed":
                self.notify(
                    f"{gauges.plain(inst.name)} failed: {gauges.plain(short_reason(inst.last_error, 120))}\n"
                    "[$text-muted]enter on its row shows the details, l its log[/]",
                    title="Instance failed", severity="error", timeout=15,
                )
        self._states = states

    # model catalogue (cached: the palette and forms open without rescanning folders) ------
    def refresh_catalog(self) -> None:
        """Re-read the model catalogue in a worker; the cache answers meanwhile."""
        self._catalog_worker()

    @work(thread=True, exclusive=True, group="catalog", exit_on_error=False)
    def _catalog_worker(self) -> None:
        try:
            models, error = list(self.backend.catalog()), None
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            models, error = [], f"cannot list models: {exc}"
        self.post_message(CatalogLoaded(tuple(models), error))

    def on_catalog_loaded(self, message: CatalogLoaded) -> None:
        if message.error is None or self.catalog_models is None:
            self.catalog_models = list(message.models)
        self.catalog_error = message.error
        if self.catalog_refresh_s:
            self.set_timer(self.catalog_refresh_s, self.refresh_catalog)

    def _poll_gpus(self) -> None:
        self._gpus_timer = None
        self._gpus_polling = True
        self._gpus_worker()

    @work(thread=True, group="poll-gpus", exit_on_error=False)
    def _gpus_worker(self) -> None:
        try:
            report, error = self.backend.gpu_report(), None
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            report, error = GpuReport(unavailable_reason=f"GPU telemetry failed: {exc}"), str(exc)
        self.post_message(GpusPolled(report, self.clock(), error))

    def on_gpus_polled(self, message: GpusPolled) -> None:
        self._gpus_polling = False
        self.gpu_polls_done += 1
        self.gpu_report = message.report
        if not self._shutting_down:
            self.dashboard.show_gpus(message.report)
        self._gpus_timer = self.set_timer(self.gpu_refresh_s, self._poll_gpus)

    def _poll_gateway(self) -> None:
        self._gateway_worker()

    @work(thread=True, group="poll-gateway", exit_on_error=False)
    def _gateway_worker(self) -> None:
        try:
            report = self.backend.gateway_report()
        except Exception as exc:  # noqa: BLE001 - a gateway that cannot be read is a line, never an error
            report = GatewayReport(reason=f"cannot read the gateway: {exc}")
        self.post_message(GatewayPolled(report))

    def on_gateway_polled(self, message: GatewayPolled) -> None:
        self.gateway_report = message.report
        if not self._shutting_down:
            self.dashboard.show_gateway(message.report)
        for screen in self.screen_stack:
            if isinstance(screen, GatewayScreen) and screen.is_mounted:
                screen.show(message.report)
        self.set_timer(self.gateway_refresh_s, self._poll_gateway)

    def poll_now(self) -> None:
        """Refresh instances soon after an action, without ever overlapping a running poll."""
        if not self._instances_polling and self._instances_timer is not None:
            self._instances_timer.stop()
            self._poll_instances()

    def select_instance(self, name: str) -> None:
        """Act on ``name`` from now on; the tables' cursors follow so a later highlight agrees."""
        if name != self.selected_instance and not self._shutting_down:
            self.selected_instance = name
            for table in self.dashboard.query(KeyedTable):
                if isinstance(table, (InstancesTable, BatchTable)) and table.selected_key != name:
                    with suppress(RowDoesNotExist):  # not drawn yet: the next poll puts the cursor there
                        table.move_cursor(row=table.get_row_index(name))
            self.dashboard.show_instances(self.instances, name, self.clock())

    # theme -------------------------------------------------------------------------------
    def _theme_changed(self, theme: object) -> None:
        self._save_theme(self.theme)

    @work(thread=True, group="settings", exit_on_error=False)
    def _save_theme(self, name: str) -> None:
        self.backend.set_setting(THEME_SETTING, name)

    # help, palette, quit ------------------------------------------------------------------
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        entries = help_entries(self.binding_groups(), self.keymap_overrides)
        self.push_screen(HelpScreen(entries, str(self.paths.config_file)))

    def action_horde_view(self) -> None:
        """H: every Horde worker, kudos and jobs over time, recent jobs."""
        if not isinstance(self.screen, HordeScreen):
            self.push_screen(HordeScreen(self.instances, self.horde_history))

    def action_gateway_view(self) -> None:
        """G: the gateway's pools, instances, shares, counts and last routing errors."""
        if isinstance(self.screen, GatewayScreen):
            return

        def closed(what: str | None) -> None:
            if what == "use":
                self.action_use_model()

        self.push_screen(GatewayScreen(self.gateway_report), closed)

    def action_use_model(self) -> None:
        """u (or m on the gateway's row): choose the box's current model among instances and pools."""
        report = self.gateway_report
        if report is None:
            self.notify("Still looking for the gateway: try again in a moment", severity="warning")
            return
        if not report.choices:
            self.notify("No instance or pool to choose: n creates an instance", severity="warning")
            return

        def picked(name: str | None) -> None:
            if name and name != report.current_model:
                self.run_backend(f"making {name} the current model", self.backend.use_model, name,
                                 done=f"current model: {name} (the gateway's KoboldAI routes go there)")
                self.gateway_report = replace(report, current_model=name)  # shown now; the next poll confirms
                if not self._shutting_down:
                    self.dashboard.show_gateway(self.gateway_report)

        self.push_screen(CurrentModelPicker(report.choices, report.current_model), picked)

    def action_copy_gateway_url(self) -> None:
        """c: the gateway's URL to the clipboard (OSC 52, as Textual's copy_to_clipboard does)."""
        url = self.gateway_report.url if self.gateway_report is not None else GatewayReport().url
        self.copy_to_clipboard(url)
        self.notify(f"copied {url} (your terminal must allow OSC 52 clipboard writes; the URL is on screen too)",
                    title="Gateway URL", markup=False)

    def action_command_palette(self) -> None:
        """One palette at a time: a fast second ctrl+p lands before the first has mounted."""
        if not self.use_command_palette or any(s.id == "--command-palette" for s in self.screen_stack):
            return
        self.push_screen(PanelCommandPalette(id="--command-palette"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":  # Textual's saves to ~/Downloads, which a server may lack
                yield command
        yield SystemCommand("Screenshot", "Save an SVG picture of the screen in the data folder", self.save_picture)
        yield SystemCommand("New instance", "Create and start a new instance", self.action_new_instance)
        yield SystemCommand("GPU priority", "Order and enable GPUs", self.action_gpu_priority)
        yield SystemCommand("Prompt", "Send a prompt to the selected instance", self.action_prompt)
        yield SystemCommand("Switch model", "Pick a model for the selected instance", self.action_pick_model)
        yield SystemCommand("Instance log", "Show the selected instance's log", self.action_show_log)
        yield SystemCommand("Horde contribution", "Every worker, kudos and jobs over time", self.action_horde_view)
        yield SystemCommand("Gateway", "The gateway's pools, shares, starts and errors", self.action_gateway_view)
        yield SystemCommand("Current model", "Where the gateway sends KoboldAI routes", self.action_use_model)
        yield SystemCommand("Copy gateway URL", "Copy the gateway's URL to the clipboard", self.action_copy_gateway_url)

    def save_picture(self) -> None:
        """The palette's Screenshot: an SVG in <data>/screenshots, and a toast with its path (or why not)."""
        folder = self.paths.data_dir / "screenshots"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = self.save_screenshot(path=str(folder))
        except OSError as exc:
            self.notify(f"could not save the screenshot in {folder}: {exc}", title="Screenshot", severity="error",
                        markup=False)
            return
        self.notify(f"saved {path}", title="Screenshot", markup=False)

    def action_quit(self) -> None:  # ctrl+q: the same as q
        self.action_quit_panel()

    def action_quit_panel(self) -> None:
        """Leave the panel; instances are servers and keep running (the next panel reattaches)."""
        running = [i.name for i in self.instances if i.running]
        self.stop_on_exit = False
        if running:
            names = ", ".join(running)
            self.exit_message = (
                f"koboldtui: {len(running)} instance{'s keep' if len(running) > 1 else ' keeps'} running ({names}); "
                "`koboldtui` reattaches to them, `koboldtui stop NAME` stops one, Q in the panel stops all."
            )
            self.exit(message=self.exit_message)
        else:
            self.exit()

    def action_stop_all_and_quit(self) -> None:
        """Stop every running instance and leave, after a yes (it aborts requests in flight)."""
        running = [i for i in self.instances if i.running]
        if not running:
            self.stop_on_exit = True
            self.exit()
            return
        busy = sum(active_requests(i) for i in running)
        names = ", ".join(i.name for i in running)
        lost = f" {busy} request{'s' if busy != 1 else ''} in flight will be aborted." if busy else ""

        def answered(stop: bool | None) -> None:
            if stop:
                self.stop_on_exit = True
                self.exit()

        self.push_screen(
            ConfirmScreen(
                f"Stop {gauges.plain(names)} and quit?{lost}\n"
                "[$text-muted]Those marked autostart start again with the next panel; x stops one for good.[/]",
                yes="Stop all and quit", no="Keep them running", default_yes=False,
            ),
            answered,
        )
