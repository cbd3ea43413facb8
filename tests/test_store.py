"""The memory verbs on a real SQLite file: add, get, list, update, invalidate, delete,
history, undo, timeline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from personavlm.errors import ConflictError, NotFoundError, ValidationError
from personavlm.memory import EventOp, MemoryStatus, MemoryStore, MemoryType

# The store contract: every test here runs on SQLite and on PostgreSQL (conftest.py).
STORE_CONTRACT = True


def test_add_and_get_round_trip(store: MemoryStore) -> None:
    added = store.add(
        "ann",
        "semantic",
        "Ann's dog is called Bobby",
        keywords=["dog", "Bobby"],
        time="2024-03-02 10:00",
    )
    got = store.get("ann", added.id)
    assert got == added
    assert got.type is MemoryType.SEMANTIC
    assert got.keywords == ("dog", "Bobby")
    assert got.valid_from == datetime(2024, 3, 2, 10, 0)
    assert got.event_start == got.event_end == got.valid_from
    assert got.status is MemoryStatus.ACTIVE and got.valid_to is None
    assert got.version == 1 and got.supersedes is None


def test_core_key_holds_one_active_record_and_timeline_tells_the_story(
    store: MemoryStore,
) -> None:
    sprite = store.add("ann", "core", "Sprite", key="favourite drink", time="2024-01-05 10:00")
    cola = store.add("ann", "core", "Coca-Cola", key="favourite drink", time="2024-03-01 10:00")

    active = store.list("ann", types=["core"], key="favourite drink")
    assert [m.content for m in active] == ["Coca-Cola"]
    chain = store.timeline("ann", cola.id)
    assert [(m.content, m.status, m.valid_from, m.valid_to) for m in chain] == [
        ("Sprite", MemoryStatus.SUPERSEDED, datetime(2024, 1, 5, 10), datetime(2024, 3, 1, 10)),
        ("Coca-Cola", MemoryStatus.ACTIVE, datetime(2024, 3, 1, 10), None),
    ]
    assert store.timeline("ann", sprite.id) == chain  # same chain from either end
    assert [m.version for m in chain] == [1, 2]
    assert cola.supersedes == sprite.id


def test_keys_are_per_user(store: MemoryStore) -> None:
    store.add("ann", "core", "Ann", key="name")
    store.add("bob", "core", "Bob", key="name")
    assert [m.content for m in store.list("ann")] == ["Ann"]
    assert [m.content for m in store.list("bob")] == ["Bob"]


def test_update_writes_a_new_version_and_keeps_the_old(store: MemoryStore) -> None:
    first = store.add("ann", "semantic", "Ann runs twice a week", time="2024-02-01 08:00")
    second = store.update(
        "ann", first.id, content="Ann swims twice a week", time="2024-05-01 08:00"
    )
    assert second.id != first.id and second.supersedes == first.id and second.version == 2
    old = store.get("ann", first.id)
    assert old.content == "Ann runs twice a week"  # content never changes in place
    assert old.status is MemoryStatus.SUPERSEDED and old.valid_to == datetime(2024, 5, 1, 8)
    assert [m.id for m in store.list("ann")] == [second.id]
    assert {m.id for m in store.list("ann", status=None)} == {first.id, second.id}


def test_update_of_a_superseded_memory_is_a_conflict(store: MemoryStore) -> None:
    first = store.add("ann", "semantic", "likes tea")
    store.update("ann", first.id, content="likes coffee")
    with pytest.raises(ConflictError, match="superseded"):
        store.update("ann", first.id, content="likes juice")


def test_update_needs_something_to_change(store: MemoryStore) -> None:
    first = store.add("ann", "semantic", "likes tea")
    with pytest.raises(ValidationError, match="new content or new keywords"):
        store.update("ann", first.id)


def test_invalidate_ends_validity_but_keeps_the_fact(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "Ann works at the bakery", time="2024-01-01 09:00")
    ended = store.invalidate("ann", fact.id, time="2024-06-30 18:00")
    assert ended.status is MemoryStatus.INVALIDATED
    assert ended.valid_to == datetime(2024, 6, 30, 18)
    assert store.list("ann") == []
    assert store.list("ann", status="invalidated") == [ended]


def test_a_memory_cannot_end_before_it_began(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "fact", time="2024-05-01 09:00")
    with pytest.raises(ConflictError, match="cannot end before it began"):
        store.invalidate("ann", fact.id, time="2024-04-01 09:00")
    assert store.get("ann", fact.id).status is MemoryStatus.ACTIVE


def test_delete_hides_from_list_and_twice_is_a_conflict(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "a secret")
    store.delete("ann", fact.id)
    assert store.list("ann") == []
    assert store.get("ann", fact.id).status is MemoryStatus.DELETED
    with pytest.raises(ConflictError, match="already deleted"):
        store.delete("ann", fact.id)


def test_history_lists_every_event_of_a_memory(store: MemoryStore) -> None:
    first = store.add("ann", "semantic", "likes tea", time="2024-01-01 10:00")
    second = store.update("ann", first.id, content="likes coffee", time="2024-02-01 10:00")
    store.invalidate("ann", second.id, time="2024-03-01 10:00")
    assert [e.op for e in store.history("ann", first.id)] == [EventOp.ADD, EventOp.UPDATE]
    events = store.history("ann", second.id)
    assert [e.op for e in events] == [EventOp.UPDATE, EventOp.INVALIDATE]
    before, after = events[1].changes[second.id]
    assert before is not None and after is not None
    assert (before["status"], after["status"]) == ("active", "invalidated")
    assert after["valid_to"] == "2024-03-01 10:00:00" and after["v"] == 1


def test_undo_add_deletes_and_undo_of_undo_restores(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "likes tea")
    add_event = store.history("ann", fact.id)[0]
    undo = store.undo("ann", add_event.id)
    assert undo.op is EventOp.UNDO and undo.undoes == add_event.id
    assert store.get("ann", fact.id).status is MemoryStatus.DELETED
    store.undo("ann", undo.id)
    assert store.get("ann", fact.id).status is MemoryStatus.ACTIVE


def test_undo_update_restores_the_previous_version(store: MemoryStore) -> None:
    sprite = store.add("ann", "core", "Sprite", key="drink", time="2024-01-01 10:00")
    cola = store.update("ann", sprite.id, content="Coca-Cola", time="2024-03-01 10:00")
    update_event = store.history("ann", cola.id)[0]
    store.undo("ann", update_event.id)
    assert [m.content for m in store.list("ann")] == ["Sprite"]
    restored = store.get("ann", sprite.id)
    assert restored.status is MemoryStatus.ACTIVE and restored.valid_to is None
    assert store.get("ann", cola.id).status is MemoryStatus.DELETED


def test_undo_invalidate_and_delete(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "fact", time="2024-01-01 10:00")
    store.invalidate("ann", fact.id, time="2024-02-01 10:00")
    store.undo("ann", store.history("ann", fact.id)[-1].id)
    assert store.get("ann", fact.id).valid_to is None
    store.delete("ann", fact.id)
    store.undo("ann", store.history("ann", fact.id)[-1].id)
    assert store.get("ann", fact.id).status is MemoryStatus.ACTIVE


def test_undo_refuses_when_the_memory_changed_since(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "likes tea", time="2024-01-01 10:00")
    add_event = store.history("ann", fact.id)[0]
    store.invalidate("ann", fact.id, time="2024-02-01 10:00")
    with pytest.raises(ConflictError, match=r"changed since by event .* \(invalidate\)"):
        store.undo("ann", add_event.id)
    assert store.get("ann", fact.id).status is MemoryStatus.INVALIDATED


def test_undo_refuses_two_active_records_for_one_key(store: MemoryStore) -> None:
    sprite = store.add("ann", "core", "Sprite", key="drink")
    store.delete("ann", sprite.id)
    store.add("ann", "core", "Water", key="drink")
    delete_event = store.history("ann", sprite.id)[-1]
    with pytest.raises(ConflictError, match="already has another active memory"):
        store.undo("ann", delete_event.id)
    assert [m.content for m in store.list("ann")] == ["Water"]


def test_every_change_writes_exactly_one_event(store: MemoryStore) -> None:
    a = store.add("ann", "semantic", "one")
    b = store.update("ann", a.id, content="two")
    store.invalidate("ann", b.id)
    events = {e.id for m in store.list("ann", status=None) for e in store.history("ann", m.id)}
    assert len(events) == 3


def test_users_cannot_see_each_others_memories(store: MemoryStore) -> None:
    secret = store.add("ann", "semantic", "Ann's secret")
    store.add("bob", "semantic", "Bob's fact")
    with pytest.raises(NotFoundError, match="no memory"):
        store.get("bob", secret.id)
    with pytest.raises(NotFoundError):
        store.delete("bob", secret.id)
    event = store.history("ann", secret.id)[0]
    with pytest.raises(NotFoundError, match="no memory event"):
        store.undo("bob", event.id)


def test_list_filters(store: MemoryStore) -> None:
    store.add("ann", "semantic", "March fact", time="2024-03-10 10:00")
    store.add("ann", "semantic", "May fact", time="2024-05-10 10:00")
    store.add("ann", "procedural", "Runs every Saturday", key="running", time="2024-04-01 08:00")
    assert [m.content for m in store.list("ann", types=["semantic"])] == ["March fact", "May fact"]
    window = store.list("ann", start="2024-04-01 00:00", end="2024-04-30 23:59")
    assert [m.content for m in window] == ["Runs every Saturday"]
    assert [m.content for m in store.list("ann", limit=1, offset=1)] == ["Runs every Saturday"]
    assert [m.content for m in store.list("ann", key="running")] == ["Runs every Saturday"]


def test_memory_time_is_the_time_of_its_source_turns(store: MemoryStore) -> None:
    from personavlm.memory import TurnInput

    store.append_turns(
        "ann",
        [
            TurnInput.create(
                time="2024-03-01 10:00", role="user", text="I got a kitten", ext_id="a"
            ),
            TurnInput.create(
                time="2024-03-01 10:05", role="user", text="her name is Mia", ext_id="b"
            ),
        ],
    )
    turns = store.turns("ann")
    fact = store.add(
        "ann",
        "semantic",
        "Ann has a kitten named Mia",
        source_turn_ids=[t.id for t in turns],
        time="2024-03-01 10:06",
    )
    assert (fact.event_start, fact.event_end) == (
        datetime(2024, 3, 1, 10),
        datetime(2024, 3, 1, 10, 5),
    )
    with pytest.raises(NotFoundError, match="not turns of user"):
        store.add("bob", "semantic", "x", source_turn_ids=[turns[0].id])


def test_missing_store_is_not_created_for_readers(
    open_store: Callable[..., MemoryStore], store_location: str
) -> None:
    from personavlm.errors import ConfigError

    with pytest.raises(ConfigError, match="no personavlm store at"):
        open_store(create=False)
    # Nothing was created: a writer now makes the store, and a reader then opens it.
    if not store_location.startswith("postgresql://"):
        assert not Path(store_location).exists()
    open_store().add("ann", "semantic", "now there is a store")
    assert [m.content for m in open_store(create=False).list("ann")] == ["now there is a store"]


def test_default_time_is_the_local_conversation_clock(store: MemoryStore) -> None:
    # Times given by callers are the user's naive local time; "now" must be on the same clock,
    # or a memory added a minute after a turn could sort hours before it.
    before = datetime.now().replace(microsecond=0)
    memory = store.add("ann", "semantic", "added without a time")
    after = datetime.now()
    assert before <= memory.valid_from <= after
    store.invalidate("ann", memory.id)  # ends "now": must not be before it began


def test_default_time_never_ends_a_record_before_it_began(store: MemoryStore) -> None:
    # Another writer may commit a holder stamped later than our clock reading (or the clock
    # may step back): a write without an explicit time must still succeed.
    future = store.add("ann", "core", "future value", key="k", time="2099-01-01 12:00")
    now_value = store.add("ann", "core", "now value", key="k")
    assert now_value.valid_from == datetime(2099, 1, 1, 12)
    assert store.get("ann", future.id).valid_to == now_value.valid_from
    ended = store.invalidate("ann", now_value.id)
    assert ended.valid_to == now_value.valid_from
    store.add("ann", "core", "later", key="other", time="2099-01-01 12:00")
    with pytest.raises(ConflictError, match="cannot end before it began"):
        store.add("ann", "core", "explicit past", key="other", time="2098-01-01 12:00")
