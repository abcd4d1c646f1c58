"""Which pool member a request goes to: the prefix holder unless it is much busier; a bounded table."""

from __future__ import annotations

from koboldtui.control.spec import InstanceSpec
from koboldtui.gateway.affinity import PrefixTable, prefix_hashes, prompt_text
from koboldtui.gateway.backends import READY, Backend, default_alias
from koboldtui.gateway.router import choose


def backend(name: str, in_flight: int = 0, horde: int = 0) -> Backend:
    spec = InstanceSpec(name=name, port=1)
    b = Backend(name=name, alias="pool", kind="serve", base_url="http://x", api_key=None, ttl_s=0,
                pin=False, spec=spec, state=READY)
    b.in_flight, b.busy, b.horde_busy = in_flight, in_flight + horde, horde
    b.parallel = 2
    return b


def test_growing_chat_matches_its_earlier_turns():
    turn1 = [{"role": "system", "content": "You are kind. " * 30}, {"role": "user", "content": "Hi"}]
    turn2 = turn1 + [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "More"}]
    h1 = prefix_hashes(prompt_text("/v1/chat/completions", {"messages": turn1}))
    h2 = prefix_hashes(prompt_text("/v1/chat/completions", {"messages": turn2}))
    assert len(h1) >= 3 and h2[:len(h1)] == h1
    other = prefix_hashes(prompt_text("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 500}]}))
    assert other[0] != h1[0]


def test_holder_wins_unless_busier_than_the_margin():
    table, a, b = PrefixTable(), backend("a"), backend("b")
    hashes = prefix_hashes("p" * 1000)
    assert choose([a, b], table, hashes).affinity is None  # nobody holds it: least busy
    table.record("b", hashes)
    pick = choose([a, b], table, hashes, margin=2)
    assert (pick.backend.name, pick.affinity, pick.matched_blocks) == ("b", True, len(hashes))
    b.in_flight = b.busy = 3
    b.parallel = 8  # a free slot: it keeps its chats however busy the others are not
    assert choose([a, b], table, hashes, margin=2).backend.name == "b"
    b.parallel = 2
    b.in_flight = b.busy = 5  # full, 3 waiting (> margin), and 5 more than a
    pick = choose([a, b], table, hashes, margin=2)
    assert (pick.backend.name, pick.affinity) == ("a", False)


def test_horde_jobs_count_as_busy():
    table, a, b = PrefixTable(), backend("a", horde=3), backend("b", in_flight=1)
    assert a.load() == 3 and b.load() == 1
    assert choose([a, b], table, prefix_hashes("q" * 300)).backend.name == "b"


def test_table_is_bounded_and_forgets():
    table = PrefixTable(size=10)
    table.record("a", prefix_hashes("z" * 128 * 50))
    assert table.matched_blocks("a", prefix_hashes("z" * 128 * 50)) == 0  # the oldest (first) blocks went
    table.record("a", prefix_hashes("y" * 128 * 5))
    assert table.matched_blocks("a", prefix_hashes("y" * 128 * 5)) == 5
    table.forget("a")
    assert table.matched_blocks("a", prefix_hashes("y" * 128 * 5)) == 0


def test_default_alias_is_the_model_stem():
    assert default_alias(InstanceSpec(name="n", port=1, model="/m/Qwen2.5-7B-Q4_K_M.gguf")) == "Qwen2.5-7B-Q4_K_M"
    assert default_alias(InstanceSpec(name="n", port=1, alias="chat")) == "chat"
    assert default_alias(InstanceSpec(name="box2", port=1, kind="remote", url="http://h:1")) == "box2"


def test_refresh_keeps_the_objects_requests_count_on(tmp_path):
    from koboldtui.control.secrets import InstanceSecrets
    from koboldtui.gateway.backends import BackendTable
    from koboldtui.store.db import open_database
    from koboldtui.store.instances import InstanceStore

    store = InstanceStore(open_database(tmp_path / "db.sqlite"))
    store.add("a", InstanceSpec(name="a", port=7001).to_dict())
    table = BackendTable(store, InstanceSecrets(tmp_path / "secrets.json"))
    table.refresh()
    held = table.get("a")
    held.in_flight += 1  # a request in flight holds this object ...
    store.update("a", InstanceSpec(name="a", port=7001, alias="chat").to_dict())
    table.refresh()  # ... while the watcher re-reads the store
    held.in_flight -= 1
    assert table.get("a") is held and held.in_flight == 0 and held.alias == "chat"
