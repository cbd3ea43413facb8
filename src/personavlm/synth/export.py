"""Writing simulated users to disk: the Persona-MME history with its PNGs, the ground truth,
question records, and the retrieval-benchmark conversation.

    files = user_files(user, data_path="samples/32k/u003/user_data.json")
    # records say "./data/Persona-MME/samples/32k/u003/user_data.json", as the released file

Everything is JSON with sorted-by-construction keys and no timestamps of the run, so the same
users give the same bytes. Layout (docs/synth.md):

    samples/<size>/<user_id>/user_data.json   + s<i>t<j>_0.png for each picture
    worlds/<user_id>.json                      ground truth, "format": 1
    Persona-MME.json, retrieval.json, manifest.json

The questions file has the released benchmark's name (`QUESTIONS_FILE`), so a synth folder
and the released one are read the same way (bench/persona_mme.py). Alignment pairs stay
records of their own (no `choices`): our pairs are asked at their own times with their own
messages, where the released file hangs each pair on a multiple-choice question.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from personavlm.personality import TRAITS
from personavlm.synth.alignment import AlignmentPair
from personavlm.synth.core import ALIGNMENT_TASK, time_text
from personavlm.synth.generate import User
from personavlm.synth.pictures import draw

__all__ = ["QUESTIONS_FILE", "WORLD_FORMAT", "UserFiles", "dumps", "image_name", "user_files"]

WORLD_FORMAT = 1
QUESTIONS_FILE = "Persona-MME.json"  # the released benchmark's name for the question records
IMAGE_MARKER = "<img>"


@dataclass(frozen=True, slots=True)
class UserFiles:
    data_path: str  # the history's path relative to the output folder
    history: dict[str, Any]  # user_data.json
    images: dict[str, bytes]  # file name -> PNG, beside the history
    world: dict[str, Any]  # worlds/<user_id>.json
    questions: list[dict[str, Any]]  # records for Persona-MME.json
    conversation: dict[str, Any]  # one conversation of retrieval.json
    retrieval_questions: list[dict[str, Any]]


def dumps(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def image_name(turn_id: str) -> str:
    return f"{turn_id}_0.png"


# The released questions file names each history from the repository root the reference
# harness runs in; readers resolve it by its `samples/...` part (bench/persona_mme.py).
RELEASED_PREFIX = "./data/Persona-MME/"


def user_files(user: User, *, data_path: str) -> UserFiles:
    """The user's files; `data_path` is where the history goes under the output folder
    (`samples/...`), written into the question records as the released file writes it."""
    images = {image_name(t.slot.id): draw(t.picture) for t in user.turns if t.picture is not None}
    released = RELEASED_PREFIX + data_path
    questions = [q.to_record(released) for q in user.questions]
    questions += [
        _alignment_record(user.user_id, len(user.questions) + i, pair, released)
        for i, pair in enumerate(user.alignment)
    ]
    return UserFiles(
        data_path=data_path,
        history=_history(user),
        images=images,
        world=_world(user),
        questions=questions,
        conversation=_conversation(user),
        retrieval_questions=[
            {
                "id": q.id,
                "conversation": user.user_id,
                "question": q.query,
                "time": time_text(q.time),
                "category": q.task,
                "evidence": [f"{e}:user" for e in q.evidence],
            }
            for q in user.questions
        ],
    )


def _history(user: User) -> dict[str, Any]:
    sessions: list[list[dict[str, str]]] = []
    for turn in user.turns:
        if turn.slot.turn == 0:
            sessions.append([])
        sessions[-1].append(
            {"time": time_text(turn.slot.time), "user": turn.user, "assistant": turn.assistant}
        )
    # Only who the user is: the facts questions ask about are in the turns, not here.
    profile = {"user_id": user.user_id, "name": user.cast.name}
    imgs = [image_name(t.slot.id) for t in user.turns if t.picture is not None]
    return {"profile": profile, "sessions": sessions, "imgs": imgs}


def _world(user: User) -> dict[str, Any]:
    pictures = [
        {"file": image_name(t.slot.id), "turn": t.slot.id, "spec": t.picture.to_dict()}
        for t in user.turns
        if t.picture is not None
    ]
    per_turn = [
        {"turn": t.slot.id, "time": time_text(t.slot.time), **user.traits.at(t.slot.time)}
        for t in user.turns
    ]
    return {
        "format": WORLD_FORMAT,
        "user_id": user.user_id,
        "size": user.size,
        **user.truth(),
        "traits": {
            "scale": [1.0, 5.0],
            "order": list(TRAITS),
            "shifts": [s.to_dict() for s in user.traits.shifts],
            "per_turn": per_turn,
        },
        "pictures": pictures,
        "questions_asked_at": time_text(user.asked_at),
    }


def _conversation(user: User) -> dict[str, Any]:
    turns = []
    for t in user.turns:
        when = time_text(t.slot.time)
        said: dict[str, Any] = {
            "id": f"{t.slot.id}:user",
            "time": when,
            "speaker": "user",
            "text": _without_markers(t.user),
        }
        if t.picture is not None:
            said["caption"] = t.picture.caption()
        turns.append(said)
        reply = {"id": f"{t.slot.id}:assistant", "time": when, "speaker": "assistant"}
        turns.append(reply | {"text": t.assistant})
    return {"id": user.user_id, "turns": turns}


def _without_markers(text: str) -> str:
    return " ".join(text.replace(IMAGE_MARKER, " ").split())


def _alignment_record(
    user_id: str, number: int, pair: AlignmentPair, data_path: str
) -> dict[str, Any]:
    return {
        "id": f"{user_id}-q{number:02d}",
        "data_path": data_path,
        "type": "Alignment",
        "question_type": ALIGNMENT_TASK,
        "time": time_text(pair.time),
        "query": pair.query,
        "alignment": {"chosen": pair.chosen, "rejected": pair.rejected},
        "evidence": list(pair.evidence),
    }
