"""Hostile and odd grammars and JSON schemas, from a seeded random source, for the fuzz runs.

Shared by tests/test_grammar_fuzz.py (a few hundred cases against a real instance) and
bench/fuzz_grammar.py (thousands). Each generator returns one request: the route, the
body, and a name for the counts. They aim at what hurt llama.cpp's grammar code: deep
nesting, huge repeats, NUL and control characters, unanchored patterns, ``$ref``s, and
random mixes of GBNF pieces.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

Case = tuple[str, str, dict[str, Any]]  # (kind, path, body)


class RawJSON(str):
    """JSON text put into a body as it is (nesting too deep for json.dumps to write)."""

_PIECES = ['root ::= ', 'r1 ::= ', 'r2 ::= ', '"a"', '"b"', '"\\x00"', '"\\u0000"', '"\\n"', "[a-z]", "[^a]",
           "[\\x00]", "[b-a]", "(", ")", "(", ")", " | ", "*", "+", "?", "{2,5}", "{0,1999}", "{3000}",
           "{99999999999999999999}", " r1", " r2", " r3", " root", "\n", "\n", ".", "<[12]>", "!<[99999999]>",
           "# c\n", "\\", '"', "[", "]", "::=", "\x01", "\x00", "\t", "é", "\ud83d\ude00"]
_TYPES = ["string", "number", "integer", "boolean", "object", "array", "null", "foo", 5, None]


def _nested_parens(rng: random.Random) -> str:
    n = rng.choice([10, 200, 256, 257, 1000, 5000, 20000, 30000])
    return "root ::= " + "(" * n + '"a"' + ")" * n


def _huge_repeat(rng: random.Random) -> str:
    item = rng.choice(['"a"', '"' + "x" * rng.choice([10, 1000, 30000]) + '"', "[a-z]", '("a" | "b")'])
    m = rng.choice([0, 1, 2, 100, 1999, 2000, 2001, 10**6, 10**30])
    n = rng.choice(["", str(m), str(m + rng.choice([0, 1, 5000]))])
    return f"root ::= {item}{{{m},{n}}}"


def _nul(rng: random.Random) -> str:
    return rng.choice(['root ::= "\\u0000"', 'root ::= "\\x00"', 'root ::= "a\x00b"', "root ::= [\\x00]",
                       'root ::= "\\U00000000"', 'root ::= "a" "\\x00"*', "root ::= [\\x00-\\x00]",
                       'root ::= "\x07"', 'root ::= "\x1b[31m"'])


def _blowup(rng: random.Random) -> str:
    n = rng.choice([5, 12, 13, 20, 40])
    kind = rng.choice(["left", "chain", "leftrec"])
    if kind == "left":
        rules = [f'r{i} ::= r{i + 1} | r{i + 1} "b"' for i in range(n)]
    elif kind == "chain":
        n *= 200
        rules = [f"r{i} ::= r{i + 1}" for i in range(n)]
    else:
        rules = [f'r{i} ::= r{i + 1} "x" | "y"' for i in range(n)] + [f'r{n - 1}x ::= r0 "z"']
    return "\n".join(["root ::= r0", *rules, f'r{n} ::= "a"'])


def _soup(rng: random.Random) -> str:
    return "root ::= " + "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 40)))


def _structured(rng: random.Random, depth: int = 0) -> str:
    """A well-formed expression (mostly valid grammars, some that match nothing)."""
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return rng.choice(['"yes"', '"no"', "[a-z]", "[0-9]", '" "', "[^\\n]", '"\\u00e9"', "."])
    if roll < 0.5:
        return " ".join(_structured(rng, depth + 1) for _ in range(rng.randint(1, 3)))
    if roll < 0.7:
        return "(" + " | ".join(_structured(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"
    return "(" + _structured(rng, depth + 1) + ")" + rng.choice(["*", "+", "?", "{1,3}", "{2}"])


def random_grammar(rng: random.Random) -> tuple[str, str]:
    """(kind, grammar text)."""
    kind = rng.choice(["nest", "repeat", "nul", "blowup", "soup", "soup", "valid", "valid"])
    if kind == "nest":
        return kind, _nested_parens(rng)
    if kind == "repeat":
        return kind, _huge_repeat(rng)
    if kind == "nul":
        return kind, _nul(rng)
    if kind == "blowup":
        return kind, _blowup(rng)
    if kind == "soup":
        return kind, _soup(rng)
    return kind, "root ::= " + _structured(rng)


def _pattern(rng: random.Random) -> str:
    core = rng.choice(["[a-z]+", "a|b", "(ab)*", "\\d{3}", "x{0,100000}", "[0-9]{2,4}", "(?=a)b", "a{5}",
                       "a{99999999999}", ".*", "\\\\", '"', "\x00", "(", "[", "a{2,1}", "é+"])
    return rng.choice([core, f"^{core}$", f"^{core}", f"{core}$"])


def random_schema(rng: random.Random, depth: int = 0) -> Any:
    """A JSON schema, often broken or hostile."""
    roll = rng.random()
    if depth > 3 or roll < 0.25:
        schema: dict[str, Any] = {"type": rng.choice(_TYPES)}
        if rng.random() < 0.4:
            schema[rng.choice(["minLength", "maxLength", "minItems", "maxItems"])] = rng.choice(
                [0, 5, 2000, 2001, 30000, 100_000_000, -1, "5", 1.5, True])
        if rng.random() < 0.3:
            schema["pattern"] = _pattern(rng)
        return schema
    if roll < 0.45:
        props = {rng.choice(["a", "b", 'q"uote', "back\\slash", "nul\x00", "é", "$ref"]) + str(i):
                 random_schema(rng, depth + 1) for i in range(rng.randint(0, 4))}
        return {"type": "object", "properties": props,
                "required": rng.sample(list(props), k=rng.randint(0, len(props)))}
    if roll < 0.6:
        return {"type": "array", "items": random_schema(rng, depth + 1),
                "maxItems": rng.choice([1, 3, 1000, 1001, 10**9])}
    if roll < 0.7:
        return {rng.choice(["anyOf", "oneOf", "allOf"]): [random_schema(rng, depth + 1) for _ in range(2)]}
    if roll < 0.8:
        return {"$defs": {"d": random_schema(rng, depth + 1)},
                "$ref": rng.choice(["#/$defs/d", "#/$defs/none", "#/nowhere", "https://x.example/s.json",
                                    "d", 5])}
    if roll < 0.9:
        return rng.choice([{"enum": ["a", 'b"c', "\x00", 1, None]}, {"const": "x\\y"}, {"enum": []},
                           {"type": ["string", "null"]}, {"items": 5}, {"properties": 5}, True, [], "x"])
    n = rng.choice([10, 63, 65, 200, 3000])
    return RawJSON('{"type": "array", "items": ' * n + '{"type": "string"}' + "}" * n)


def deep_json_text(depth: int) -> str:
    return "[" * depth + '"x"' + "]" * depth


def random_case(rng: random.Random, max_length: int = 1) -> Case:
    """One request: a grammar, a schema (through json_to_grammar or response_format), or a
    list field given as deeply nested JSON text."""
    roll = rng.random()
    if roll < 0.45:
        kind, grammar = random_grammar(rng)
        return (f"grammar/{kind}", "/api/v1/generate",
                {"prompt": "Answer:", "max_length": max_length, "grammar": grammar, "temperature": 0})
    schema = random_schema(rng)
    if roll < 0.7:
        return "schema/json_to_grammar", "/api/extra/json_to_grammar", {"schema": schema}
    if roll < 0.92:
        return ("schema/response_format", "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "JSON please"}], "max_tokens": max_length,
                 "temperature": 0,
                 "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}})
    field = rng.choice(["banned_tokens", "dry_sequence_breakers"])
    text = deep_json_text(rng.choice([3, 100, 999, 1000, 3000, 100_000]))
    return f"field/{field}", "/api/v1/generate", {"prompt": "x", "max_length": max_length, field: text}


def body_bytes(body: dict[str, Any]) -> bytes:
    """The request body (NUL passes as a JSON escape; RawJSON values go in as they are)."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, RawJSON):
            raws.append(str(value))
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(body))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text.encode()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(base: str, pid: int, cases: int, seed: int, clients: int, generate_share: float = 1.0) -> dict[str, Any]:
    """Send ``cases`` seeded cases from ``clients`` threads while /health is polled; the
    answers by kind and status, the 5xx and dropped ones, the slowest /health, and RSS.
    ``generate_share`` < 1 leaves out that share of the cases that would decode (a short
    run keeps more of the cheap refusals)."""
    rng = random.Random(seed)
    work: list[Case] = []
    while len(work) < cases:
        case = random_case(rng)
        if case[0] in ("grammar/valid", "schema/response_format") and rng.random() > generate_share:
            continue
        work.append(case)
    counts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    bad: list[str] = []
    health: list[float] = []
    health_not_ok: list[int] = []  # /health answers other than 200 (503 "wedged": a stalled decode thread)
    slowest: list[tuple[float, str]] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=10) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.get("/health")
                    health.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        health_not_ok.append(r.status_code)
                except httpx.HTTPError:
                    health.append(float("inf"))
                time.sleep(0.05)

    def send(case: tuple[str, str, dict[str, object]]) -> None:
        kind, path, body = case
        started = time.perf_counter()
        with httpx.Client(base_url=base, timeout=120) as c:
            try:
                r = c.post(path, content=body_bytes(body), headers={"Content-Type": "application/json"})
                status = f"{r.status_code // 100}xx"
                if r.status_code >= 500:
                    bad.append(f"{kind} {r.status_code} {r.text[:300]}")
            except httpx.TimeoutException:  # no answer in 120 s: the instance stalled (issue 20)
                status = "timeout"
                bad.append(f"{kind} no answer in 120 s")
            except httpx.HTTPError as exc:
                status = "dropped"
                bad.append(f"{kind} dropped: {exc!r}")
        spent = time.perf_counter() - started
        counts[f"{kind} {status}"] += 1
        seconds[f"{kind} {status}"] += spent
        slowest.append((spent, kind))
        statuses[status] += 1

    before = rss_mb(pid)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, work))
    elapsed = time.perf_counter() - t0
    done.set()
    poller.join()
    return {"counts": counts, "statuses": statuses, "seconds": seconds, "bad": bad,
            "health_max_s": max(health, default=0.0),
            "health_n": len(health), "health_not_ok": len(health_not_ok),
            "slowest_s": max(slowest, default=(0.0, "")), "rss_before_mb": before, "rss_after_mb": rss_mb(pid),
            "elapsed_s": elapsed}
