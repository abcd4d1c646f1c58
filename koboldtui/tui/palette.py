"""Command-palette provider: every catalogue model as "switch the selected instance to it"."""

from __future__ import annotations

import asyncio
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from koboldtui.tui.backend import CatalogModel


class ModelSwitchProvider(Provider):
    """Lists the catalogue's models; choosing one asks to switch the selected instance."""

    async def startup(self) -> None:
        backend = getattr(self.app, "backend", None)
        self.models: list[CatalogModel] = []
        if backend is not None:
            try:
                self.models = await asyncio.to_thread(backend.catalog)
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
