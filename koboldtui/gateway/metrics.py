"""Counters the gateway keeps about its routing, for ``/metrics`` and ``gateway status``."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class GatewayMetrics:
    """Requests per model and instance, affinity hits, retries, 5xx; thread-safe counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (model asked, instance) → count
        self.affinity_hits = 0
        self.affinity_misses = 0
        self.retries = 0
        self.errors_5xx = 0
        self.stream_faults = 0
        self.unknown_models = 0

    def routed(self, model: str, instance: str, *, affinity: bool | None) -> None:
        with self._lock:
            self.requests[(model, instance)] += 1
            if affinity is True:
                self.affinity_hits += 1
            elif affinity is False:
                self.affinity_misses += 1

    def count(self, attr: str) -> None:
        with self._lock:
            setattr(self, attr, getattr(self, attr) + 1)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            per_instance: Counter[str] = Counter()
            for (_, instance), n in self.requests.items():
                per_instance[instance] += n
            total = sum(per_instance.values())
            return {
                "requests": [{"model": m, "instance": i, "count": n}
                             for (m, i), n in sorted(self.requests.items())],
                "share": {i: round(n / total, 3) for i, n in sorted(per_instance.items())} if total else {},
                "affinity_hits": self.affinity_hits, "affinity_misses": self.affinity_misses,
                "retries": self.retries, "errors_5xx": self.errors_5xx,
                "stream_faults": self.stream_faults, "unknown_models": self.unknown_models,
            }

    def prometheus(self, extra: dict[str, float]) -> str:
        """The Prometheus text format, written by hand as the instances' own /metrics is."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP koboldtui_gateway_{name} {help_text}")
            lines.append(f"# TYPE koboldtui_gateway_{name} {kind}")
            lines.extend(f"koboldtui_gateway_{name}{labels} {value}" for labels, value in samples)

        with self._lock:
            metric("requests_total", "counter", "Requests routed, by model asked and instance.",
                   [(f'{{model="{m}",instance="{i}"}}', n) for (m, i), n in sorted(self.requests.items())])
            metric("affinity_hits_total", "counter", "Requests sent to the instance holding their prefix.",
                   [("", self.affinity_hits)])
            metric("retries_total", "counter", "Requests retried on another pool member.", [("", self.retries)])
            metric("responses_5xx_total", "counter", "5xx answers the gateway gave.", [("", self.errors_5xx)])
            metric("stream_faults_total", "counter", "Streams cut by an instance that died.",
                   [("", self.stream_faults)])
        for name, value in extra.items():
            metric(name, "counter", name.replace("_", " ") + ".", [("", value)])
        return "\n".join(lines) + "\n"
