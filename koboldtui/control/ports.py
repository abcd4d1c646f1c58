"""Is a TCP port free, and if not, who holds it — so a start fails with a name, not a bind traceback.

The holder is found the way ``ss -ltnp`` does it, without extra packages: the listening
socket's inode from ``/proc/net/tcp{,6}``, then the process whose ``/proc/PID/fd`` links
to ``socket:[inode]``. Processes of other users cannot be inspected; then we say so.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"


class PortUnavailableError(RuntimeError):
    """The port an instance wants is taken or not bindable; the message names the holder."""


@dataclass(frozen=True)
class PortHolder:
    """A process found listening on a port (``pid`` None when it could not be identified)."""

    port: int
    pid: int | None
    command: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "another process (not visible to this user)"
        return f"pid {self.pid} ({self.command or '?'})"


def _bind_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (same SO_REUSEADDR as uvicorn)."""
    return bind_error(host, port) is None


def bind_error(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` would give now, or None when it is free."""
    bind_host = host if host not in ("", "*") else "0.0.0.0"
    try:
        sock = socket.socket(_bind_family(bind_host), socket.SOCK_STREAM)
    except OSError as exc:
        return exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_host, port))
        sock.listen(1)
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, state, inode = parts[1], parts[3], parts[9]
            try:
                local_port = int(local.rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port and state == TCP_LISTEN and inode != "0":
                inodes.add(inode)
    return inodes


def _command_of(pid_dir: Path) -> str | None:
    try:
        raw = (pid_dir / "cmdline").read_bytes()
    except OSError:
        raw = b""
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if args:
        text = " ".join(args)
        return text if len(text) <= 120 else text[:117] + "..."
    try:
        return (pid_dir / "comm").read_text().strip() or None
    except OSError:
        return None


def find_port_holder(port: int, *, proc: Path = Path("/proc")) -> PortHolder | None:
    """The process listening on ``port`` (None if nothing listens; pid None if not ours to see)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    try:
        pid_dirs = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        pid_dirs = []
    for pid_dir in pid_dirs:
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue  # another user's process or gone
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    return PortHolder(port, int(pid_dir.name), _command_of(pid_dir))
            except OSError:
                continue
    return PortHolder(port, None, None)


def check_port_available(host: str, port: int, *, owner_hint: str | None = None) -> None:
    """Raise ``PortUnavailableError`` saying who holds ``host:port`` and what to do; else return."""
    if not (1 <= port <= 65535):
        raise PortUnavailableError(f"port {port} is out of range: pick one in 1-65535 with --port")
    error = bind_error(host, port)
    if error is None:
        return
    if error.errno == errno.EADDRINUSE:
        holder = find_port_holder(port)
        who = owner_hint or (holder.describe() if holder else "another process")
        raise PortUnavailableError(
            f"port {port} is taken by {who}: stop it, or pick another port with "
            "`koboldtui instance edit NAME --port P`"
        )
    if error.errno == errno.EACCES:
        raise PortUnavailableError(
            f"port {port} needs root to bind on {host} (ports below 1024 are privileged): "
            "pick a port of 1024 or above with --port"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        raise PortUnavailableError(
            f"host {host} is not an address of this machine, so port {port} cannot be bound there: "
            "use 127.0.0.1 or 0.0.0.0"
        )
    raise PortUnavailableError(f"cannot listen on {host}:{port}: {error.strerror or error}")
