"""The koboldtui panel app: polls the backend off the UI thread and routes keys to actions.

Polls are one-shot timers re-armed when the previous poll's message is handled, so a
slow NVML or a hung instance never piles up overlapping polls or blocks a key press.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer

from koboldtui.paths import AppPaths, app_paths
from koboldtui.tui.actions import PanelActions
from koboldtui.tui.backend import GpuReport, InstanceView, PanelBackend
from koboldtui.tui.keymap import load_keymap
from koboldtui.tui.messages import GpusPolled, InstancesPolled
from koboldtui.tui.palette import ModelSwitchProvider
from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.dashboard import DASHBOARD_BINDINGS, DashboardScreen
from koboldtui.tui.screens.help import HelpScreen, help_entries
from koboldtui.tui.themes import DEFAULT_THEME, LoadedThemes, load_themes, theme_dirs

Clock = Callable[[], float]
THEME_SETTING = "theme"


class KoboldPanel(PanelActions, App[None]):
    """The control panel; everything it knows about the world comes from ``backend``."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "koboldtui"
    COMMANDS = App.COMMANDS | {ModelSwitchProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_panel", "Quit", id="quit", tooltip="Quit (asks whether to stop running instances)"),
        Binding("question_mark,f1", "help", "Help", id="help", tooltip="Show every key"),
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
    ) -> None:
        super().__init__()
        self.backend = backend
        self.clock = clock
        self.refresh_s = refresh_s
        self.gpu_refresh_s = gpu_refresh_s
        self.countdown_tick_s = countdown_tick_s
        self.fade_after_s = fade_after_s
        self.paths = paths or app_paths()
        self.first_run = first_run
        self.instances: tuple[InstanceView, ...] = ()
        self.gpu_report = GpuReport()
        self.selected_instance: str | None = None
        self.stop_on_exit = False
        self.prompt_max_tokens = 200
        self.polls_done = 0
        self.gpu_polls_done = 0
        self._first_run_done = False
        self._instances_timer: Timer | None = None
        self._gpus_timer: Timer | None = None
        self._instances_polling = False
        self._gpus_polling = False
        loaded = themes if themes is not None else load_themes(theme_dirs(self.paths))
        self.theme_problems = list(loaded.problems)
        for theme in loaded.themes:
            self.register_theme(theme)
        wanted = theme_name or DEFAULT_THEME
        if wanted in self.available_themes:
            self.theme = wanted
        elif theme_name:
            self.theme_problems.append(f"theme {theme_name!r} is not installed; using {self.theme}")
        known_ids = {b.id for b in self.all_bindings() if b.id}
        keymap = load_keymap(self.paths.config_file, known_ids)
        self.keymap_overrides = keymap.keymap
        self.keymap_problems = list(keymap.problems)

    # lifecycle -------------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return DashboardScreen(self.clock, self.countdown_tick_s, self.fade_after_s)

    def on_mount(self) -> None:
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)
        for problem in self.theme_problems + self.keymap_problems:
            self.notify(problem, title="Config", severity="warning", timeout=8)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._poll_instances()
        self._poll_gpus()

    @classmethod
    def binding_groups(cls) -> list[tuple[str, list[Binding]]]:
        """Every binding by where it works, for the help screen and keymap validation."""
        from koboldtui.tui.screens.confirm import ConfirmScreen
        from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
        from koboldtui.tui.screens.instance_form import InstanceFormScreen
        from koboldtui.tui.screens.log_view import LogScreen
        from koboldtui.tui.screens.pickers import BatchFormScreen, ModelPickerScreen
        from koboldtui.tui.screens.prompt import PromptScreen
        from koboldtui.tui.screens.switch_progress import SwitchProgressScreen

        screens = [
            ("instance form", InstanceFormScreen), ("GPU priority", GpuPriorityScreen),
            ("prompt", PromptScreen), ("log", LogScreen), ("model picker", ModelPickerScreen),
            ("batch size", BatchFormScreen), ("model switch", SwitchProgressScreen),
            ("questions", ConfirmScreen), ("help", HelpScreen),
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
        """The dashboard (always the bottom screen while the app runs)."""
        screen = self.screen_stack[0]
        assert isinstance(screen, DashboardScreen)
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

    def poll_now(self) -> None:
        """Refresh instances soon after an action, without ever overlapping a running poll."""
        if not self._instances_polling and self._instances_timer is not None:
            self._instances_timer.stop()
            self._poll_instances()

    def select_instance(self, name: str) -> None:
        if name != self.selected_instance and not self._shutting_down:
            self.selected_instance = name
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

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New instance", "Create and start a new instance", self.action_new_instance)
        yield SystemCommand("GPU priority", "Order and enable GPUs", self.action_gpu_priority)
        yield SystemCommand("Prompt", "Send a prompt to the selected instance", self.action_prompt)
        yield SystemCommand("Switch model", "Pick a model for the selected instance", self.action_pick_model)
        yield SystemCommand("Instance log", "Show the selected instance's log", self.action_show_log)

    def action_quit(self) -> None:  # ctrl+q goes through the same question
        self.action_quit_panel()

    def action_quit_panel(self) -> None:
        running = [i.name for i in self.instances if i.running]
        if not running:
            self.exit()
            return

        def answered(stop: bool | None) -> None:
            if stop is None:
                return
            self.stop_on_exit = stop
            self.exit()

        names = ", ".join(running)
        self.push_screen(
            ConfirmScreen(
                f"Stop the running instances ({names}) before quitting?\n"
                "[$text-muted]No leaves them running; the next panel reattaches to them.[/]",
                yes="Stop them and quit",
                no="Leave running",
                default_yes=True,
            ),
            answered,
        )
