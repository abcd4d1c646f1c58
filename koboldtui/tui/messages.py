"""Messages the poll workers post to the UI; newer telemetry replaces older unread telemetry.

``can_replace`` (Toolong's trick) means a slow UI never works through a backlog of stale
snapshots: only the freshest one is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from koboldtui.tui.backend import CatalogModel, GatewayReport, GpuReport, InstanceView


@dataclass
class InstancesPolled(Message):
    """A fresh list of instances (or the error that stopped the poll)."""

    instances: tuple[InstanceView, ...]
    polled_at: float
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, InstancesPolled)


@dataclass
class GpusPolled(Message):
    """Fresh GPU telemetry (or the error that stopped the poll)."""

    report: GpuReport
    polled_at: float
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GpusPolled)


@dataclass
class CatalogLoaded(Message):
    """The model catalogue, read off the UI thread (or why it could not be read)."""

    models: tuple[CatalogModel, ...]
    error: str | None = None


@dataclass
class GatewayPolled(Message):
    """A fresh look at the box's gateway (its status JSON, or why it did not answer)."""

    report: GatewayReport

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GatewayPolled)
