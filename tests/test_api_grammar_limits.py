"""Grammars and JSON schemas that used to kill or stall an instance, sent to a real ``koboldtui serve``.

One instance process for the module (a crash must not take pytest with it). Each
reproducer from issue 20 must now get a 4xx that says why, while the instance lives,
/health answers within 0.5 s throughout, and RSS stays within 100 MB; then a bounded
fuzz run (tests/grammar_fuzz.py) must see 0 crashes and 0 × 5xx.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from grammar_fuzz import rss_mb, run

from tests.instance_harness import serve_process

pytestmark = pytest.mark.slow
MAX_HEALTH_S = 0.5


class Instance:
    """A running ``koboldtui serve`` process, its log lines, and a /health poller."""

    def __init__(self, base: str, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.base, self.proc, self.lines = base, proc, lines

    def post(self, path: str, body: dict[str, Any] | bytes) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.base + path, content=content, timeout=120,
                          headers={"Content-Type": "application/json"})

    def survives(self, send: Any) -> tuple[Any, float, float]:
        """Run ``send()`` while /health is polled; (its result, slowest /health s, RSS growth MB)."""
        worst = [0.0]
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=self.base, timeout=10) as c:
                while not done.is_set():
                    t0 = time.perf_counter()
                    assert c.get("/health").status_code == 200
                    worst[0] = max(worst[0], time.perf_counter() - t0)
                    time.sleep(0.02)

        before = rss_mb(self.proc.pid)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            result = send()
        finally:
            done.set()
            poller.join()
        assert self.proc.poll() is None, "the instance died:\n" + "".join(self.lines[-20:])
        return result, worst[0], rss_mb(self.proc.pid) - before


@pytest.fixture(scope="module")
def instance(shared_models_dir) -> Iterator[Instance]:
    model = next(shared_models_dir.glob("*.gguf"))
    with serve_process(model, "--ctx", "512", "--parallel", "2", "--queue-timeout", "60") as (base, proc, lines):
        served = Instance(base, proc, lines)
        # warm up once (the first grammar request builds llama.cpp's piece tables: ~45 MB, once)
        assert served.post("/api/v1/generate",
                           {"prompt": "x", "max_length": 1, "grammar": 'root ::= "a"'}).is_success
        yield served


def _chat(schema: Any, max_tokens: int = 8) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Answer in JSON."}], "max_tokens": max_tokens,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}


def _message(r: httpx.Response) -> str:
    body = r.json()
    error = body.get("error")
    return error["message"] if isinstance(error, dict) else str(error)


def test_a_maxlength_schema_that_overflowed_the_parser_is_a_400_about_the_schema(instance: Instance) -> None:
    r, health, _ = instance.survives(lambda: instance.post("/v1/chat/completions",
                                                           _chat({"type": "string", "maxLength": 30000})))
    assert r.status_code == 400, r.text
    assert "'maxLength'" in _message(r) and "30000" in _message(r) and "at most 2000" in _message(r)
    assert health < MAX_HEALTH_S
    # the middle range got "check its GBNF syntax" and a grammar dumped into the log
    r = instance.post("/api/extra/json_to_grammar", {"schema": {"type": "string", "maxLength": 5000}})
    assert r.status_code == 400 and "maxLength" in _message(r) and "GBNF" not in _message(r)
    # a length llama.cpp can enforce works, through the same path the crash took
    r = instance.post("/v1/chat/completions", _chat({"type": "string", "maxLength": 1500}, max_tokens=6))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith('"')
    assert not any("error parsing grammar" in line for line in instance.lines)


def test_20000_nested_parentheses_are_a_400_naming_the_depth(instance: Instance) -> None:
    grammar = "root ::= " + "(" * 20000 + '"a"' + ")" * 20000
    r, health, grown = instance.survives(lambda: instance.post(
        "/api/v1/generate", {"prompt": "x", "max_length": 2, "grammar": grammar}))
    assert r.status_code == 400, r.text
    assert "nests groups 20000 deep; at most 256" in _message(r)
    assert health < MAX_HEALTH_S and grown < 100


@pytest.mark.parametrize("grammar", ['root ::= "\\u0000"', 'root ::= "\\x00"', "root ::= [\\x00]",
                                     'root ::= "a\x00"'])
def test_a_grammar_asking_for_nul_is_a_400(instance: Instance, grammar: str) -> None:
    r, health, _ = instance.survives(lambda: instance.post(
        "/api/v1/generate", {"prompt": "x", "max_length": 2, "grammar": grammar}))
    assert r.status_code == 400, r.text
    assert "NUL" in _message(r)
    assert health < MAX_HEALTH_S


def test_a_grammar_that_leaves_no_token_ends_its_request_with_a_422(instance: Instance) -> None:
    # parses, but no token can ever match (an empty range): llama.cpp would abort the process
    # on accepting whatever the sampler drew
    grammar = "root ::= [b-a]"
    r, health, _ = instance.survives(lambda: instance.post(
        "/api/v1/generate", {"prompt": "x", "max_length": 2, "grammar": grammar}))
    assert r.status_code == 422, r.text
    assert "allows no token" in _message(r)
    # and the biases removing every token the grammar allows do the same
    tokens = instance.post("/api/extra/tokencount", {"prompt": "yes"}).json()["ids"]
    r = instance.post("/api/v1/generate", {"prompt": "x", "max_length": 2, "grammar": 'root ::= "yes"',
                                           "logit_bias": {str(t): -100 for t in tokens},
                                           "banned_tokens": ["y"]})
    assert r.status_code == 422, r.text
    assert health < MAX_HEALTH_S


def test_min_length_100_million_is_refused_at_once_and_costs_no_memory(instance: Instance) -> None:
    schema = {"type": "string", "minLength": 100_000_000}

    def send() -> list[httpx.Response]:
        out = []
        for _ in range(5):
            out.append(instance.post("/v1/chat/completions", _chat(schema)))
            out.append(instance.post("/api/extra/json_to_grammar", {"schema": schema}))
        return out

    answers, health, grown = instance.survives(send)
    assert {r.status_code for r in answers} == {400}
    assert all("'minLength'" in _message(r) and "100000000" in _message(r) for r in answers)
    assert health < MAX_HEALTH_S, f"/health took {health:.2f} s"
    assert grown < 100, f"RSS grew {grown:.0f} MB"


def test_an_unanchored_pattern_works_and_bad_schemas_say_why(instance: Instance) -> None:
    schema = {"type": "string", "pattern": "[a-z]+"}
    r = instance.post("/api/extra/json_to_grammar", {"schema": schema})
    assert r.status_code == 200 and "[a-z]" in r.json()["result"]
    r = instance.post("/v1/chat/completions", _chat(schema, max_tokens=6))
    assert r.status_code == 200, r.text
    assert re.fullmatch(r'"[a-z]*"?\s*', r.json()["choices"][0]["message"]["content"])
    for bad, why in (({"type": "foo"}, "'type'"), ({"$ref": "#/$defs/none"}, "points to nothing"),
                     ({"$ref": "https://example.com/s.json"}, "remote"),
                     ({"type": "object", "properties": {"a": True}}, "/properties/a"),
                     ({"type": "string", "pattern": "^(?=a)b$"}, "'(?'")):
        for r in (instance.post("/api/extra/json_to_grammar", {"schema": bad}),
                  instance.post("/v1/chat/completions", _chat(bad))):
            assert r.status_code == 400, (bad, r.text)
            assert why in _message(r) and "schema" in _message(r), (bad, _message(r))


def test_property_names_with_quotes_and_backslashes_make_a_valid_grammar(instance: Instance) -> None:
    schema = {"type": "object", "properties": {'say "hi"': {"type": "boolean"}, "a\\b": {"const": 'x"\\'}},
              "required": ['say "hi"', "a\\b"]}
    r = instance.post("/v1/chat/completions", _chat(schema, max_tokens=40))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("field", ["banned_tokens", "dry_sequence_breakers"])
def test_list_fields_as_json_text_nested_3000_deep_are_a_400(instance: Instance, field: str) -> None:
    r, health, _ = instance.survives(lambda: instance.post(
        "/api/v1/generate", {"prompt": "x", "max_length": 1, field: "[" * 3000 + "]" * 3000}))
    assert r.status_code == 400, r.text
    assert field in _message(r) and "nested too deeply" in _message(r)
    assert health < MAX_HEALTH_S


def test_fuzz_grammars_and_schemas_no_crash_no_5xx(instance: Instance) -> None:
    # as many clients as slots: no request waits in the queue (a busy queue's 503 is not a fault)
    result = run(instance.base, instance.proc.pid, cases=200, seed=7, clients=2, generate_share=0.1)
    print({k: v for k, v in sorted(result["counts"].items())})
    print(f"slowest /health {result['health_max_s']:.3f} s; RSS {result['rss_before_mb']:.0f} -> "
          f"{result['rss_after_mb']:.0f} MB in {result['elapsed_s']:.0f} s")
    assert instance.proc.poll() is None, "the instance died:\n" + "".join(instance.lines[-20:])
    assert result["bad"] == []
    assert sum(result["counts"].values()) == 200
    assert result["statuses"]["4xx"] > 80 and result["statuses"]["2xx"] > 10  # both kinds were exercised
    assert result["health_max_s"] < MAX_HEALTH_S and result["health_not_ok"] == 0
    assert result["rss_after_mb"] - result["rss_before_mb"] < 100
