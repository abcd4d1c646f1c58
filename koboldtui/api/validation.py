"""Request-body checks that turn bad input into a 400 that names the field and says what to send.

Kept apart from the routes so KoboldAI and OpenAI share one set of rules: malformed JSON,
bytes that are not UTF-8, wrong types and out-of-range numbers are all client errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

MAX_BODY_BYTES = 8 * 1024 * 1024


class BadRequest(Exception):
    """A client error; ``param`` names the offending field where there is one."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest with the reason."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}", status=413)
    if not raw.strip():
        raise BadRequest("request body is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start}): send UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("the JSON is nested too deeply: send a flat object") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise BadRequest(f"the JSON could not be read: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _numeric_string(value: Any) -> Any:
    """KoboldCpp reads "0.7" and "42" as numbers; so do we (anything else stays as it was)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return value
    return value


def get_number(body: dict[str, Any], name: str, default: float, *, lo: float | None = None,
               hi: float | None = None) -> float:
    value = _numeric_string(body.get(name, default))
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"'{name}' must be a number, got {_type_name(value)} {value!r:.40}", name)
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        raise BadRequest(f"'{name}' is far too large", name) from None
    if not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a finite number", name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadRequest(f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return value


def get_int(body: dict[str, Any], name: str, default: int, *, lo: int | None = None,
            hi: int | None = None, hint: str = "") -> int:
    value = _numeric_string(body.get(name, default))
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer, got {_type_name(value)} {value!r:.40}", name)
    if lo is not None and value < lo:
        raise BadRequest(f"'{name}' must be at least {lo}, got {value}{hint}", name)
    if hi is not None and value > hi:
        raise BadRequest(f"'{name}' must be at most {hi}, got {value}{hint}", name)
    return value


def get_bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false, got {_type_name(value)}", name)
    return value


def get_str(body: dict[str, Any], name: str, default: str | None = None, *, required: bool = False) -> str:
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"'{name}' is required", name)
        return default or ""
    value = body[name]
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string, got {_type_name(value)}", name)
    return check_text(value, name)


def check_text(value: str, name: str) -> str:
    """``value`` if it can be encoded as UTF-8; a lone surrogate (JSON "\\ud800") is a 400."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"'{name}' holds a lone UTF-16 surrogate at character {exc.start}: "
                         "send valid Unicode text", name) from None
    return value


def get_str_list(body: dict[str, Any], name: str, *, max_items: int = 256,
                 max_chars: int = 512) -> tuple[str, ...]:
    """A string or a list of strings (stop sequences); nulls and empty strings are dropped."""
    value = body.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise BadRequest(f"'{name}' must be a string or a list of strings", name)
    if len(value) > max_items:
        raise BadRequest(f"'{name}' has {len(value)} entries; at most {max_items} are allowed", name)
    for v in value:
        if v is not None and len(v) > max_chars:
            raise BadRequest(f"an entry of '{name}' is {len(v)} characters long; at most {max_chars} "
                             "are allowed", name)
    return tuple(check_text(v, name) for v in value if v)
