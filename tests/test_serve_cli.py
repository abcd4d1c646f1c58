"""``koboldtui serve`` as a user runs it: a real process, Ctrl-C, and clear start-up errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.instance_harness import free_port


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "koboldtui.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def test_serve_bundled_model_then_ctrl_c_releases_port(bundled_model):
    port = free_port()
    proc = serve("--port", str(port), "--ctx", "256", "--parallel", "2")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/generate", json={"prompt": "Hi", "max_length": 3}, timeout=30)
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free again


def test_missing_model_file_is_a_clear_error(tmp_path):
    proc = serve("--model", str(tmp_path / "nope.gguf"), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in out and "--model" in out


def test_not_a_gguf_is_a_clear_error(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    proc = serve("--model", str(fake), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "not a GGUF file" in out


def test_taken_port_is_a_clear_error(bundled_model):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = serve("--port", str(port))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert str(port) in out and "--port" in out


def test_public_host_without_key_refuses_to_start():
    proc = serve("--host", "0.0.0.0", "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--api-key" in out


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "koboldtui.cli", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("koboldtui ")
