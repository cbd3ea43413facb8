"""`synthesize`: write a whole simulated benchmark into a new folder.

    from personavlm.synth import synthesize
    summary = synthesize("out/synth-32k", users=3, size="32k", seed=7)
    print(summary.turns, summary.images, summary.questions)

The folder must not exist or be empty. Everything is written into a hidden sibling folder
first (`.<name>.partial-XXXX`) and renamed into place at the end, so an interrupted run
leaves no half-written benchmark under the name asked for (a hard kill can leave the hidden
sibling; delete it). Same seed and arguments give byte-identical files, paraphrasing aside.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import personavlm
from personavlm.errors import ValidationError
from personavlm.synth.core import ALIGNMENT_TASK, TASKS
from personavlm.synth.export import QUESTIONS_FILE, UserFiles, dumps, user_files
from personavlm.synth.generate import User, build_user, check_size
from personavlm.synth.paraphrase import Paraphraser, ParaphraseStats, paraphrase_turns

__all__ = ["MANIFEST_FORMAT", "Summary", "synthesize"]

MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Summary:
    out_dir: Path
    seed: int
    size: str
    users: int
    turns: int
    images: int
    questions: dict[str, int]  # task -> count, alignment pairs included
    paraphrase: ParaphraseStats | None
    seconds: float = field(compare=False)

    def manifest(self) -> dict[str, Any]:
        """manifest.json: what was generated and how (no run time: it must be reproducible)."""
        return {
            "format": MANIFEST_FORMAT,
            "generator": "personavlm.synth",
            "version": personavlm.__version__,
            "seed": self.seed,
            "size": self.size,
            "users": self.users,
            "turns": self.turns,
            "images": self.images,
            "questions": self.questions,
            "paraphrase": None if self.paraphrase is None else self.paraphrase.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out_dir), **self.manifest(), "seconds": round(self.seconds, 3)}


def synthesize(
    out_dir: str | Path,
    *,
    users: int,
    size: str,
    seed: int,
    paraphraser: Paraphraser | None = None,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Generate `users` simulated users into `out_dir`; `progress(1)` after each user."""
    started = time.perf_counter()
    if users < 1:
        raise ValidationError(f"--users must be at least 1, got {users}")
    check_size(size)
    target = Path(out_dir)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        summary = _write_all(scratch, users, size, seed, paraphraser, progress)
        if target.exists():
            target.rmdir()  # checked empty above
        os.replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return replace(summary, out_dir=target, seconds=time.perf_counter() - started)


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValidationError(
            f"output folder {target} exists and is not empty; the simulator never "
            "overwrites: pass a new folder, or delete this one first"
        )


def _data_path(user: User) -> str:
    """Where the history goes, relative to the output folder (the records' `data_path`)."""
    return f"samples/{user.size}/{user.user_id}/user_data.json"


def _write_user(root: Path, user_id: str, files: UserFiles) -> UserFiles:
    """The user's own files: the history with its pictures, and the ground truth."""
    history = root / files.data_path
    history.parent.mkdir(parents=True)
    history.write_bytes(dumps(files.history))
    for name, png in files.images.items():
        (history.parent / name).write_bytes(png)
    (root / "worlds").mkdir(exist_ok=True)
    (root / "worlds" / f"{user_id}.json").write_bytes(dumps(files.world))
    return files


def _write_all(
    root: Path,
    users: int,
    size: str,
    seed: int,
    paraphraser: Paraphraser | None,
    progress: Callable[[int], None] | None,
) -> Summary:
    records: list[dict[str, Any]] = []
    conversations: list[dict[str, Any]] = []
    retrieval_questions: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    turns = images = rewritten = kept = 0
    for n in range(users):
        user = build_user(seed=seed, user_id=f"u{n:03d}", size=size, index=n)
        if paraphraser is not None:
            new_turns, done, failed = paraphrase_turns(paraphraser, user.turns)
            user = replace(user, turns=new_turns)
            rewritten, kept = rewritten + done, kept + failed
        files = _write_user(root, user.user_id, user_files(user, data_path=_data_path(user)))
        records += files.questions
        conversations.append(files.conversation)
        retrieval_questions += files.retrieval_questions
        counts.update(r["question_type"] for r in files.questions)
        turns += len(user.turns)
        images += len(files.images)
        if progress is not None:
            progress(1)
    stats = None
    if paraphraser is not None:
        stats = ParaphraseStats(paraphraser.name, rewritten, kept)
    order = [*TASKS, ALIGNMENT_TASK]
    summary = Summary(
        out_dir=root,
        seed=seed,
        size=size,
        users=users,
        turns=turns,
        images=images,
        questions={task: counts[task] for task in order},
        paraphrase=stats,
        seconds=0.0,
    )
    name = f"personavlm-synth-{size}-seed{seed}"
    retrieval = {"name": name, "conversations": conversations, "questions": retrieval_questions}
    (root / QUESTIONS_FILE).write_bytes(dumps(records))
    (root / "retrieval.json").write_bytes(dumps(retrieval))
    (root / "manifest.json").write_bytes(dumps(summary.manifest()))
    return summary
