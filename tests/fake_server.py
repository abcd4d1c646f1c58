"""A small stand-in for a foreign model server, run by the tests as a command instance's command line.

Stdlib only, so it starts in a blink. It answers like one of the flavours koboldtui
recognises, with fixed values the tests check in ``ps`` and the panel rows:

- ``--flavour koboldcpp``: ``/api/extra/version``, ``/api/v1/model``, ``/api/extra/perf``
  (no ``/health``, as KoboldCpp has none); ``--images`` makes it an image instance.
- ``--flavour llama-server``: ``/health`` (503 "Loading model" for ``--load-s`` seconds),
  ``/props``, ``/slots``, ``/metrics``, ``/v1/models``.
- ``--flavour openai``: ``/health`` and ``/v1/models`` only.
- ``--flavour a1111``: ``/sdapi/v1/sd-models``, ``/sdapi/v1/options``, ``/sdapi/v1/progress``.
- ``--flavour odd``: every GET answers 200 with a JSON list (a server of an unexpected shape).

Every flavour also answers ``GET /env`` (what the process received: its environment's GPU
variables, argv and pid, read from inside the child) and ``POST /crash`` (exit code 3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()

KOBOLDCPP = {
    "/api/extra/version": {"result": "KoboldCpp", "version": "1.99.fake", "llm": True, "txt2img": False},
    "/api/v1/model": {"result": "koboldcpp/FakeKobold-7B"},
    "/api/extra/perf": {
        "last_eval_speed": 42.5,
        "total_gens": 3,
        "total_img_gens": 7,
        "queue": 2,
        "idle": 0,
        "uptime": 12.0,
    },
    "/v1/models": {"object": "list", "data": [{"id": "koboldcpp/FakeKobold-7B"}]},
}
LLAMA_SERVER = {
    "/props": {
        "total_slots": 4,
        "model_path": "/models/fake-llama-3b.gguf",
        "build_info": "b9999-fake",
        "default_generation_settings": {"n_ctx": 4096},
    },
    "/slots": [
        {"id": 0, "is_processing": True},
        {"id": 1, "is_processing": False},
        {"id": 2, "is_processing": True},
        {"id": 3, "is_processing": False},
    ],
    "/v1/models": {"object": "list", "data": [{"id": "fake-llama-3b"}]},
}
METRICS = """# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 12.5
llamacpp:requests_processing 2
llamacpp:requests_deferred 1
"""
A1111 = {
    "/sdapi/v1/sd-models": [{"title": "sd15.safetensors [6ce0161689]", "model_name": "sd15"}],
    "/sdapi/v1/options": {"sd_model_checkpoint": "sd15.safetensors [6ce0161689]"},
    "/sdapi/v1/progress": {"progress": 0.4, "state": {"job_count": 1}},
}
OPENAI = {"/health": {"status": "ok"}, "/v1/models": {"object": "list", "data": [{"id": "plain-model"}]}}


def answers(args: argparse.Namespace) -> dict[str, object]:
    if args.flavour == "koboldcpp":
        table = dict(KOBOLDCPP)
        if args.images:
            table["/api/extra/version"] = {**KOBOLDCPP["/api/extra/version"], "llm": False, "txt2img": True}
        return table
    if args.flavour == "llama-server":
        return dict(LLAMA_SERVER)
    if args.flavour == "a1111":
        return dict(A1111)
    return dict(OPENAI)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--flavour", default="openai", choices=("koboldcpp", "llama-server", "openai", "a1111", "odd"))
    parser.add_argument("--images", action="store_true")
    parser.add_argument("--load-s", type=float, default=0.0)
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    table = answers(args)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: object, kind: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            loading = time.monotonic() - STARTED < args.load_s
            if path == "/env":
                self._send(200, {
                    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
                    "argv": sys.argv,
                    "pid": os.getpid(),
                })
            elif args.flavour == "odd":
                self._send(200, [1, 2, 3])
            elif args.flavour == "llama-server" and path == "/health":
                if loading:
                    self._send(503, {"error": {"code": 503, "message": "Loading model"}})
                else:
                    self._send(200, {"status": "ok"})
            elif args.flavour == "llama-server" and path == "/metrics":
                self._send(200, METRICS, "text/plain; version=0.0.4")
            elif path in table:
                self._send(200, table[path])
            else:
                self._send(404, {"error": f"no route {path}"})

        def do_POST(self) -> None:
            if self.path == "/crash":
                os._exit(3)
            self._send(404, {"error": "no route"})

        def log_message(self, format: str, *a: object) -> None:
            print(format % a, flush=True)

    print(f"fake {args.flavour} server on port {args.port}", flush=True)
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
