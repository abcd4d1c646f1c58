"""A real headless Chromium: a page on another origin does what KoboldAI Lite does, and fails
where a hostile page would try to take over.

The page is served from a second port (another origin), runs its fetches, and posts what
it saw back to the server that served it; the test reads that. Skipped when Chromium is
not installed (``apt-get install -y chromium``); test_api_browser.py checks the same rules
with plain HTTP and always runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from koboldtui.config import ServeConfig
from koboldtui.request_book import Requester
from tests.instance_harness import free_port, running_instance

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")]

PAGE = """<!doctype html><html><body><pre id="out">running</pre><script>
const API = "%(api)s";
const json = {"Content-Type": "application/json"};
async function attempt(name, fn, out) {
  try { out[name] = await fn(); } catch (e) { out[name] = "blocked: " + e.name; }
}
async function run() {
  const out = {};
  await attempt("model", async () => {  // Lite sends a JSON content type even on GET: a preflight
    const r = await fetch(API + "/api/v1/model", {headers: json});
    return [r.status, (await r.json()).result];
  }, out);
  await attempt("stream", async () => {
    const r = await fetch(API + "/api/extra/generate/stream", {method: "POST", headers: json,
      body: JSON.stringify({prompt: "Once upon a time", max_length: 4, genkey: "WEBKEY1"})});
    const reader = r.body.getReader(); let text = "";
    for (;;) { const {done, value} = await reader.read(); if (done) break; text += new TextDecoder().decode(value); }
    return [r.status, text.includes("event: message"), text.includes('"finish_reason": "length"')];
  }, out);
  await attempt("abort", async () => {
    const long = fetch(API + "/api/extra/generate/stream", {method: "POST", headers: json,
      body: JSON.stringify({prompt: "Count to a thousand:", max_length: 200, ban_eos_token: true,
                            genkey: "WEBKEY2"})});
    let text = "";
    for (let i = 0; i < 200 && !text; i++) {
      await new Promise(ok => setTimeout(ok, 100));
      const c = await fetch(API + "/api/extra/generate/check", {method: "POST", headers: json,
        body: JSON.stringify({genkey: "WEBKEY2"})});
      text = (await c.json()).results[0].text;
    }
    const a = await fetch(API + "/api/extra/abort", {method: "POST", headers: json,
      body: JSON.stringify({genkey: "WEBKEY2"})});
    const ended = await (await long).text();
    return [a.status, (await a.json()).success, text.length > 0, ended.includes('"finish_reason": "abort"')];
  }, out);
  await attempt("control", async () => {
    const r = await fetch(API + "/api/koboldtui/horde/stop", {method: "POST", headers: json, body: "{}"});
    return ["answered", r.status];
  }, out);
  await attempt("plain_text", async () => {  // a "simple request": no preflight, body parsed as JSON before
    const r = await fetch(API + "/api/v1/generate", {method: "POST", mode: "no-cors",
      body: JSON.stringify({prompt: "x", max_length: 1, genkey: "WEBKEY3"})});
    return ["sent", r.type];
  }, out);
  await attempt("untyped", async () => {  // a Blob without a type: a body with no Content-Type at all
    const r = await fetch(API + "/api/v1/generate", {method: "POST", mode: "no-cors",
      body: new Blob([JSON.stringify({prompt: "x", max_length: 1, genkey: "WEBKEY4"})])});
    return ["sent", r.type];
  }, out);
  await attempt("rebound", async () => {
    const r = await fetch("%(rebound)s/api/v1/model");
    return ["answered", r.status];
  }, out);
  document.getElementById("out").textContent = JSON.stringify(out);
  await fetch("/results", {method: "POST", body: JSON.stringify(out)});
}
run();
</script></body></html>"""


class PageServer:
    """Serves the page on its own port (its own origin) and collects what the page posts back."""

    def __init__(self, page: str) -> None:
        self.results: dict | None = None
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                outer.results = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.got.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_page_on_another_origin_works_like_lite_and_cannot_take_over(bundled_model, tmp_path):
    config = ServeConfig(ctx=256, parallel=2, batch_size=64, max_queue=8)
    with running_instance(config, bundled_model) as (base, runtime):
        port = base.rsplit(":", 1)[1]
        # "rebind.test" resolves to 127.0.0.1 inside this browser only: a DNS-rebinding page
        page = PageServer(PAGE % {"api": base, "rebound": f"http://rebind.test:{port}"})
        browser = subprocess.Popen([
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP rebind.test 127.0.0.1",
            f"http://localhost:{page.port}/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert page.got.wait(180), "the page never reported back"
        finally:
            browser.terminate()
            try:
                browser.wait(20)
            except subprocess.TimeoutExpired:
                browser.kill()
            page.close()
        out = page.results
        assert out["model"] == [200, "koboldcpp/gemma-3-270m-q4_k_m"], out
        assert out["stream"] == [200, True, True], out
        assert out["abort"] == [200, "true", True, True], out
        assert str(out["control"]).startswith("blocked"), out  # 403 without CORS headers: unreadable
        assert str(out["rebound"]).startswith("blocked"), out
        # the text/plain request was refused before it could run a generation
        assert runtime.requests.to_show(Requester("127.0.0.1", "WEBKEY3")) is None, out
        assert out["untyped"] == ["sent", "opaque"], out
        assert runtime.requests.to_show(Requester("127.0.0.1", "WEBKEY4")) is None, out
