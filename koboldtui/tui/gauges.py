"""Text gauges (bars, durations, sizes) drawn with theme variables, never literal colours.

The dashboard shows many small numbers; formatting them in one place keeps every
panel consistent and lets tests check the words a person reads.
"""

from __future__ import annotations

from textual.markup import escape

FULL, EMPTY = "█", "░"


def bar(fraction: float, width: int, fill: str = "$success", empty: str = "$text-disabled") -> str:
    """A content-markup bar ``width`` cells wide, filled to ``fraction`` (0..1)."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    parts = []
    if filled:
        parts.append(f"[{fill}]{FULL * filled}[/]")
    if width - filled:
        parts.append(f"[{empty}]{EMPTY * (width - filled)}[/]")
    return "".join(parts)


def load_variable(fraction: float) -> str:
    """Theme variable for a load level: calm, busy, nearly full."""
    if fraction >= 0.9:
        return "$error"
    if fraction >= 0.7:
        return "$warning"
    return "$success"


def duration(seconds: float | None) -> str:
    """Short human duration: 42s, 3m05s, 2h03m, 3d04h; '-' when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def gib(mib: float) -> str:
    """MiB as GiB with one decimal (VRAM is read in GiB)."""
    return f"{mib / 1024:.1f}"


def size(nbytes: int | None) -> str:
    """Bytes as a short size: 812M, 1.4G; '-' when unknown."""
    if nbytes is None:
        return "-"
    mib = nbytes / (1024 * 1024)
    return f"{mib:.0f}M" if mib < 1000 else f"{mib / 1024:.1f}G"


def count(n: int) -> str:
    """A count in at most five cells: 950, 12.3k, 4.1M."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def maybe(value: float | None, fmt: str, missing: str = "n/a") -> str:
    """Format a reading that NVML may not offer ("not available" is a value, not an error)."""
    return missing if value is None else format(value, fmt)


def plain(text: object) -> str:
    """Escape user/remote text so square brackets are shown, not parsed as markup."""
    return escape(str(text))
