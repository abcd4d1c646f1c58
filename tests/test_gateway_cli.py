"""``koboldtui gateway use|enable`` and the instance flags the gateway reads (--alias, --ttl, --pin)."""

from __future__ import annotations

from koboldtui.cli import main
from koboldtui.gateway.backends import BackendTable
from koboldtui.gateway.current_model import SETTING
from koboldtui.control.secrets import InstanceSecrets
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore
from koboldtui.store.settings import get_setting


def test_alias_ttl_pin_and_use(capsys):
    assert main(["instance", "add", "a", "--port", "6101", "--alias", "chat", "--ttl", "5", "--pin"]) == 0
    assert main(["instance", "add", "b", "--port", "6102", "--alias", "chat"]) == 0
    assert main(["instance", "edit", "b", "--no-pin", "--ttl", "0.5"]) == 0
    paths = app_paths()
    conn = open_database(paths.database)
    table = BackendTable(InstanceStore(conn), InstanceSecrets(paths.secrets_file))
    table.refresh()
    a, b = table.get("a"), table.get("b")
    assert (a.alias, a.ttl_s, a.pin) == ("chat", 300.0, True)
    assert (b.alias, b.ttl_s, b.pin) == ("chat", 30.0, False)
    assert [m.name for m in table.resolve("chat")] == ["a", "b"]
    assert main(["gateway", "use", "chat"]) == 0
    assert get_setting(conn, SETTING) == "chat"
    assert main(["gateway", "use", "nope"]) == 1
    assert "models: a, b, chat" in capsys.readouterr().err


def test_enable_saves_a_supervised_gateway_that_is_not_a_model():
    assert main(["gateway", "enable", "--port", "5099"]) == 0
    paths = app_paths()
    store = InstanceStore(open_database(paths.database))
    spec = store.get("gateway").spec
    assert spec["kind"] == "command" and "gateway --port {port}" in spec["command"]
    assert spec["restart"] == "on-failure" and spec["autostart"] is True
    table = BackendTable(store, InstanceSecrets(paths.secrets_file))
    assert table.refresh() == []  # the gateway does not route to itself
    assert main(["gateway", "disable"]) == 0
    assert store.find("gateway") is None


def test_with_no_model_chosen_kobold_routes_go_to_one_this_box_can_start():
    """A remote that sorts first and does not answer is not the default current model."""
    from koboldtui.gateway.wiring import make_gateway

    assert main(["instance", "add", "aaa-remote", "--url", "http://127.0.0.1:9"]) == 0
    assert main(["instance", "add", "local", "--port", "6103"]) == 0
    gateway = make_gateway(app_paths())
    gateway.table.get("aaa-remote").state = "unreachable"
    assert gateway.current_name() == "local"
    gateway.table.get("aaa-remote").state = "ready"  # a remote that answers is fine to use
    assert gateway.current_name() == "aaa-remote"
    assert main(["gateway", "use", "local"]) == 0
    gateway.current.reload()
    assert gateway.current_name() == "local"
