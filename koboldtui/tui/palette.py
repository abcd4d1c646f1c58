"""The command palette: every catalogue model as "switch the selected instance to it".

The models come from the app's cached catalogue (refreshed in a worker), so the palette
opens without rescanning model folders. ``PanelCommandPalette`` is Textual's palette with
an idempotent dismiss: a fast double Enter used to pop the dashboard and end the app.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from textual.await_complete import AwaitComplete
from textual.command import CommandPalette, DiscoveryHit, Hit, Hits, Provider

from koboldtui.tui.backend import CatalogModel


class PanelCommandPalette(CommandPalette):
    """Textual's palette, closing once however fast the keys come."""

    _closed_once = False

    def dismiss(self, result: Any = None) -> AwaitComplete:
        if self._closed_once or not self.is_attached or self.app.screen is not self:
            return AwaitComplete.nothing()
        self._closed_once = True
        return super().dismiss(result)


class ModelSwitchProvider(Provider):
    """Lists the catalogue's models; choosing one asks to switch the selected instance."""

    async def startup(self) -> None:
        cached = getattr(self.app, "catalog_models", None)
        self.models: list[CatalogModel] = []
        if cached is not None:  # the app keeps it fresh in a worker
            self.models = [m for m in cached if m.error is None]
            return
        backend = getattr(self.app, "backend", None)
        if backend is not None:
            try:
                self.models = [m for m in await asyncio.to_thread(backend.catalog) if m.error is None]
            except Exception:  # noqa: BLE001 - shown to the person, never raised into the UI
                self.models = []

    def _commands(self) -> list[tuple[str, str, object]]:
        target = getattr(self.app, "selected_instance", None) or "the selected instance"
        switch = self.app.request_model_switch
        return [
            (f"Switch {target} to {m.name}", m.path, partial(switch, m.path))
            for m in self.models
        ]

    async def discover(self) -> Hits:
        for title, path, callback in self._commands():
            yield DiscoveryHit(title, callback, help=path)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, path, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=path)
