"""The gateway view's text: URL, current model, pools and their instances, counts, errors."""

from __future__ import annotations

from koboldtui.tui.widgets.gateway_view import gateway_lines


def test_view_shows_pools_shares_and_errors():
    status = {"current_model": "chat", "pools": {"chat": ["a", "b"]},
              "instances": [{"name": "a", "state": "ready", "requests": 3, "in_flight": 1, "pin": True,
                             "ttl_min": 0, "started_by_gateway": False},
                            {"name": "b", "state": "stopped", "requests": 1, "in_flight": 0, "pin": False,
                             "ttl_min": 5, "started_by_gateway": True}],
              "routing": {"share": {"a": 0.75, "b": 0.25}, "affinity_hits": 2, "retries": 1, "errors_5xx": 0},
              "starts": 1, "ttl_stops": 1, "room_stops": 0, "last_errors": ["start b: no such file"]}
    text = "\n".join(gateway_lines("http://127.0.0.1:5000", status))
    assert "current model [b]chat[/b]" in text and "pool [b]chat[/b]" in text
    assert "75%" in text and "pinned" in text and "ttl 5m (started by the gateway)" in text
    assert "affinity hits 2" in text and "TTL stops 1" in text and "no such file" in text


def test_view_says_when_the_gateway_is_not_answering():
    text = gateway_lines("http://127.0.0.1:5000", None, "connection refused")[0]
    assert "not answering: connection refused" in text and "koboldtui gateway" in text
