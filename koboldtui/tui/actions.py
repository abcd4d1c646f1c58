"""What the panel's keys do: each action runs its backend call in a worker and reports back.

Kept apart from the polling app so the list of things a person can do reads in one place;
failures come back as notifications that say what failed and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.worker import Worker, WorkerState

from koboldtui.tui.backend import InstanceDraft, InstanceView
from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from koboldtui.tui.screens.log_view import LogScreen
from koboldtui.tui.screens.pickers import BatchFormScreen, ModelPickerScreen
from koboldtui.tui.screens.prompt import PromptScreen
from koboldtui.tui.screens.switch_progress import SwitchProgressScreen
from koboldtui.tui.widgets.queue_table import QueueTable

if TYPE_CHECKING:
    from koboldtui.tui.app import KoboldPanel

ACTION_GROUP = "panel-action"
HORDE_ACTIONS = {
    "start": ("horde_start", "Horde worker starting"),
    "stop": ("horde_stop", "Horde worker stopping"),
    "maintenance-on": ("horde_maintenance_on", "Horde worker entering maintenance"),
    "maintenance-off": ("horde_maintenance_off", "Horde worker leaving maintenance"),
}


class PanelActions:
    """Mixin for ``KoboldPanel``: one method per key the dashboard offers."""

    def run_backend(self: KoboldPanel, label: str, fn: Callable[..., Any], *args: Any, done: str | None = None) -> None:
        """Run a blocking backend call in a worker; success/failure arrive as notifications."""

        def call() -> Any:
            fn(*args)
            return done

        self.run_worker(call, name=label, group=ACTION_GROUP, thread=True, exit_on_error=False)

    def on_worker_state_changed(self: KoboldPanel, event: Worker.StateChanged) -> None:
        """The one place action failures turn into messages for the person."""
        worker = event.worker
        if worker.group != ACTION_GROUP:
            return
        if event.state == WorkerState.ERROR:
            self.notify(f"{worker.name} failed: {worker.error}", title="Action failed", severity="error", timeout=10)
            self.poll_now()
        elif event.state == WorkerState.SUCCESS:
            if worker.result:
                self.notify(str(worker.result))
            self.poll_now()

    def selected(self: KoboldPanel) -> InstanceView | None:
        """The instance the keys act on; tells the person when there is none."""
        inst = next((i for i in self.instances if i.name == self.selected_instance), None)
        if inst is None:
            self.notify("No instance selected: create one with n", severity="warning")
        return inst

    # first run -----------------------------------------------------------------------
    def create_first_instance(self: KoboldPanel) -> None:
        def create() -> None:
            draft = self.backend.default_draft()
            self.backend.save_instance(draft, None)
            self.backend.start_instance(draft.config.name)

        self.notify("No instances yet: creating one on the bundled model and starting it", title="First run")
        self.run_backend("creating the first instance", create, done="First instance is starting")

    # instances -------------------------------------------------------------------------
    def action_new_instance(self: KoboldPanel) -> None:
        self._open_form(None)

    def action_edit_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self._open_form(inst)

    def _open_form(self: KoboldPanel, inst: InstanceView | None) -> None:
        def load() -> None:
            draft = self.backend.draft_for(inst.name) if inst else self.backend.default_draft()
            self.call_from_thread(show, draft)

        def show(draft: InstanceDraft) -> None:
            names = {i.name for i in self.instances}
            form = InstanceFormScreen(self.backend, draft, self.gpu_report, inst.name if inst else None, names)
            self.push_screen(form, saved)

        def saved(draft: InstanceDraft | None) -> None:
            if draft is None:
                return
            name = draft.config.name
            if inst is None:
                self.run_backend(f"creating {name}", self._create_and_start, draft, done=f"{name} created and starting")
            else:
                self.run_backend(f"saving {name}", self._save_and_restart, draft, inst.name, inst.running,
                                 done=f"{name} saved" + (" and restarting" if inst.running else ""))

        self.run_worker(load, name="loading the instance settings", group=ACTION_GROUP, thread=True, exit_on_error=False)

    def _create_and_start(self: KoboldPanel, draft: InstanceDraft) -> None:
        self.backend.save_instance(draft, None)
        self.backend.start_instance(draft.config.name)

    def _save_and_restart(self: KoboldPanel, draft: InstanceDraft, original: str, running: bool) -> None:
        self.backend.save_instance(draft, original)
        if running:
            self.backend.restart_instance(draft.config.name)

    def action_start_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.run_backend(f"starting {inst.name}", self.backend.start_instance, inst.name, done=f"{inst.name} starting")

    def action_stop_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.run_backend(f"stopping {inst.name}", self.backend.stop_instance, inst.name, done=f"{inst.name} stopped")

    def action_restart_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.run_backend(f"restarting {inst.name}", self.backend.restart_instance, inst.name,
                             done=f"{inst.name} restarting")

    # model switch ------------------------------------------------------------------------
    def action_pick_model(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is None:
            return
        current = inst.status.engine.model_path if inst.status else inst.model
        self.push_screen(ModelPickerScreen(self.backend, inst.name, current),
                         lambda path: self.request_model_switch(path) if path else None)

    def request_model_switch(self: KoboldPanel, model: str) -> None:
        """Confirm, then stop → start the selected instance on ``model`` with progress."""
        inst = self.selected()
        if inst is None:
            return
        short = model.rsplit("/", 1)[-1]

        def answered(yes: bool | None) -> None:
            if yes:
                self.push_screen(SwitchProgressScreen(self.backend, inst.name, model), lambda _ok: self.poll_now())

        self.push_screen(ConfirmScreen(
            f"Switch {inst.name} to {short}?\n[$text-muted]It stops the instance (running requests are aborted),"
            " then starts it on the new model.[/]",
            yes="Switch", no="Keep current", default_yes=True), answered)

    # batch, GPUs, prompt, log ------------------------------------------------------------------
    def action_batch_size(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is None:
            return
        current = inst.status.engine.n_batch if inst.status else 512

        def chosen(value: int | None) -> None:
            if value is not None and value != current:
                self.run_backend(f"setting the batch size of {inst.name}", self.backend.set_batch_size, inst.name,
                                 value, done=f"{inst.name}: batch size {value}, reloading")

        self.push_screen(BatchFormScreen(inst.name, current), chosen)

    def action_gpu_priority(self: KoboldPanel) -> None:
        self.push_screen(GpuPriorityScreen(self.backend, self.gpu_report))

    def action_prompt(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.push_screen(PromptScreen(self.backend, inst.name, getattr(self, "prompt_max_tokens", 200)))

    def action_show_log(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.push_screen(LogScreen(self.backend, inst.name))

    # queue and horde ---------------------------------------------------------------------
    def action_abort_request(self: KoboldPanel) -> None:
        picked = self.dashboard.query_one(QueueTable).selected_request()
        if picked is None:
            self.notify("No request selected: focus the queue (3) and pick one", severity="warning")
            return
        instance, genkey = picked
        self.run_backend(f"aborting {genkey}", self.backend.abort, instance, genkey, done=f"abort sent for {genkey}")

    def action_horde(self: KoboldPanel, what: str) -> None:
        inst = self.selected()
        if inst is None or what not in HORDE_ACTIONS:
            return
        method, done = HORDE_ACTIONS[what]
        if method == "horde_maintenance_on":
            self.run_backend(f"{what} on {inst.name}", self.backend.horde_maintenance, inst.name, True, done=done)
        elif method == "horde_maintenance_off":
            self.run_backend(f"{what} on {inst.name}", self.backend.horde_maintenance, inst.name, False, done=done)
        else:
            self.run_backend(f"Horde {what} on {inst.name}", getattr(self.backend, method), inst.name, done=done)
