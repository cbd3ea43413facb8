"""The unit of work, the generic queue, the agent's typed jobs and the one time window.

The store's verbs are each one transaction; callers with a workflow of their own (the
agent) compose the repositories in `store.transaction(user)`. These tests hold what that
promises: all of a unit or none of it, on both engines; a queue that knows nothing of what
its jobs mean; and one rule for time windows from every entry point.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from personavlm.agent.exchange import close_session, record_exchange
from personavlm.agent.jobs import PAYLOAD_VERSION, SessionJob, TurnJob, decode
from personavlm.errors import StoreError, ValidationError
from personavlm.memory import MemoryStore, TurnInput
from personavlm.memory.queue import QueuedJob
from personavlm.memory.writes import AddOp
from personavlm.timeutil import TimeWindow

ENGINES = pytest.mark.parametrize(
    "store_location",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)


def _turn(role: str, text: str, time: str) -> TurnInput:
    return TurnInput.create(time=time, role=role, text=text)


class Boom(Exception):
    pass


@ENGINES
def test_a_unit_of_work_commits_whole_or_not_at_all(store: MemoryStore) -> None:
    indexed = store.index_turns([_turn("user", "I adopted a beagle", "2024-03-02 09:00")])
    prepared = store.prepare("ann", [AddOp("semantic", "Ann has a beagle")])
    with pytest.raises(Boom), store.transaction("ann") as tx:
        tx.users.ensure("ann")
        tx.append_turn("ann", indexed[0], "test")
        tx.memories.apply("ann", prepared, "test")
        tx.queue.enqueue("ann", "anything", {"x": 1})
        raise Boom
    assert not store.has_user("ann")
    assert store.queue_status().pending == 0

    with store.transaction("ann") as tx:
        tx.users.ensure("ann")
        turn = tx.append_turn("ann", indexed[0], "test")
        [memory] = tx.memories.apply("ann", prepared, "test")
    assert turn is not None and store.turns("ann")[0].id == turn.id
    assert store.get("ann", memory.id).content == "Ann has a beagle"
    # the turn's own episodic entry and the semantic memory, one audit event each
    assert store.count("ann") == {"core": 0, "semantic": 1, "episodic": 1, "procedural": 0}


@ENGINES
def test_the_queue_is_generic_with_per_user_dedupe_keys(store: MemoryStore) -> None:
    store.create_user("ann")
    store.create_user("bo")
    with store.transaction("ann") as tx:
        first = tx.queue.enqueue("ann", "reindex-something", {"n": 1}, dedupe_key="once")
        again = tx.queue.enqueue("ann", "reindex-something", {"n": 2}, dedupe_key="once")
        plain = tx.queue.enqueue("ann", "other", {"n": 3})
    with store.transaction("bo") as tx:
        other_user = tx.queue.enqueue("bo", "reindex-something", {"n": 4}, dedupe_key="once")
    assert first is not None and plain is not None and other_user is not None
    assert again is None  # one job per (user, key)
    job = store.claim_job("w", user_id="ann")
    assert job is not None and (job.id, job.kind, job.payload) == (
        first,
        "reindex-something",
        {"n": 1},
    )
    assert job.dedupe_key == "once"


@ENGINES
def test_exchanges_queue_typed_jobs_and_close_sessions_once(store: MemoryStore) -> None:
    first = record_exchange(
        store,
        "ann",
        _turn("user", "hi", "2024-03-02 09:00"),
        _turn("assistant", "hello", "2024-03-02 09:00"),
    )
    assert first is not None and first.closed_session is None
    later = record_exchange(  # more than 60 minutes later: a new session closes the first
        store,
        "ann",
        _turn("user", "back", "2024-03-02 11:00"),
        _turn("assistant", "hi", "2024-03-02 11:00"),
    )
    assert later is not None and later.closed_session == first.user_turn.session_id
    assert close_session(store, "ann") is not None
    assert close_session(store, "ann") is None  # the open session's close is queued already
    kinds = []
    while (job := store.claim_job("w", user_id="ann")) is not None:
        kinds.append(decode(job))
        store.finish_job(job.id)
    assert kinds == [
        TurnJob(first.user_turn.id, first.assistant_turn.id),
        SessionJob(first.user_turn.session_id),
        TurnJob(later.user_turn.id, later.assistant_turn.id),
        SessionJob(later.user_turn.session_id),
    ]


def _queued(kind: str, payload: dict[str, object]) -> QueuedJob:
    return QueuedJob(7, "ann", kind, None, payload, 1, None, datetime(2024, 1, 1))


def test_job_payloads_are_versioned_and_checked() -> None:
    v = PAYLOAD_VERSION
    assert decode(_queued("turn", {"v": v, "user_turn": 1, "assistant_turn": 2})) == TurnJob(1, 2)
    assert decode(_queued("session", {"v": 1, "session_id": 3})) == SessionJob(3)  # v1 loads
    with pytest.raises(StoreError, match=r"payload version 99.*upgrade personavlm"):
        decode(_queued("turn", {"v": 99, "user_turn": 1, "assistant_turn": 2}))
    with pytest.raises(StoreError, match="malformed turn payload"):
        decode(_queued("turn", {"v": v, "user_turn": 1}))
    with pytest.raises(StoreError, match="kind 'dream'"):
        decode(_queued("dream", {"v": v}))


def test_one_rule_for_a_time_window() -> None:
    window = TimeWindow.parse("2024-03-01 00:00", "2024-03-31 23:59")
    assert window.sql("first_col", "last_col") == (
        " AND last_col >= ? AND first_col <= ?",
        ["2024-03-01 00:00:00", "2024-03-31 23:59:00"],
    )
    assert TimeWindow().sql("a", "b") == ("", [])
    with pytest.raises(ValidationError, match="start is after end"):
        TimeWindow.parse("2024-04-01 00:00", "2024-03-01 00:00")


@ENGINES
def test_a_reversed_window_is_refused_by_every_verb(store: MemoryStore) -> None:
    store.add("ann", "semantic", "fact", time="2024-03-02 10:00")
    reversed_ = {"start": "2024-05-01 00:00", "end": "2024-04-01 00:00"}
    for verb in (
        lambda: store.list("ann", **reversed_),
        lambda: store.turns("ann", **reversed_),
        lambda: store.search("ann", "fact", **reversed_),
    ):
        with pytest.raises(ValidationError, match="start is after end"):
            verb()
