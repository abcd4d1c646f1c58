"""The panel's calls into a running instance's own HTTP API: abort, Horde control, prompts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from koboldtui.tui.backend import BackendError
from koboldtui.tui.panel_words import panel_words


class InstanceApi:
    """Mixin for LiveBackend: needs ``self.registry`` (specs + secrets) and ``self.http_timeout_s``."""

    registry: Any
    http_timeout_s: float

    def _base_url(self, name: str) -> tuple[str, dict[str, str]]:
        spec = self.registry.get(name)
        key = self.registry.secrets.get(name).get("api_key")
        return spec.base_url(), ({"Authorization": f"Bearer {key}"} if key else {})

    def _post(self, name: str, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        url, headers = self._base_url(name)
        try:
            response = httpx.post(url + path, json=body, headers=headers, timeout=timeout or self.http_timeout_s)
        except httpx.HTTPError as exc:
            raise BackendError(f"{name} did not answer on {url} ({exc}): is it running? start it with s") from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            detail = data.get("error") or data.get("detail") or response.text[:200]
            raise BackendError(panel_words(f"{name} refused {path}: {detail}"))
        return data if isinstance(data, dict) else {}

    def abort(self, instance: str, genkey: str) -> bool:
        return bool(self._post(instance, "/api/extra/abort", {"genkey": genkey}).get("success"))

    def horde_start(self, instance: str) -> None:
        self._post(instance, "/api/koboldtui/horde/start", {})

    def horde_stop(self, instance: str) -> None:
        self._post(instance, "/api/koboldtui/horde/stop", {})

    def horde_maintenance(self, instance: str, enabled: bool) -> None:
        self._post(instance, "/api/koboldtui/horde/maintenance",
                   {"on": enabled, "message": "paused from the koboldtui panel" if enabled else ""}, timeout=15)

    def stream_prompt(self, instance: str, prompt: str, max_tokens: int,
                      temperature: float | None = None) -> Iterator[str]:
        """KoboldCpp's stream route; a server without it (llama-server, vLLM: 404) gets the
        OpenAI ``/v1/completions`` stream instead, so ``p`` works on every kind that serves text."""
        url, headers = self._base_url(instance)
        kobold: dict[str, Any] = {"prompt": prompt, "max_length": max_tokens}
        openai: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "stream": True}
        if temperature is not None:
            kobold["temperature"] = openai["temperature"] = temperature
        routes = (("/api/extra/generate/stream", kobold, _kobold_token), ("/v1/completions", openai, _openai_token))
        try:
            for i, (path, body, token_of) in enumerate(routes):
                with httpx.stream("POST", url + path, json=body, headers=headers,
                                  timeout=httpx.Timeout(10.0, read=120.0)) as response:
                    if response.status_code in (404, 405) and i + 1 < len(routes):
                        continue  # not a KoboldCpp API: try the OpenAI one
                    if response.status_code >= 400:
                        response.read()
                        raise BackendError(f"{instance} refused the prompt on {path}: {response.text[:200]}")
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            token = token_of(line[5:].strip())
                            if token:
                                yield token
                    return
        except httpx.HTTPError as exc:
            raise BackendError(f"{instance} did not answer on {url} ({exc}): is it ready?") from exc


def _kobold_token(data: str) -> str:
    try:
        return str(json.loads(data).get("token", "") or "")
    except (ValueError, AttributeError):
        return ""


def _openai_token(data: str) -> str:
    if data == "[DONE]":
        return ""
    try:
        choices = json.loads(data).get("choices") or [{}]
        return str(choices[0].get("text", "") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
