"""The persona simulator: reproducible output that the loaders read, questions whose answers
follow from the history (and from the pixels, for pictures), and honest failure."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from personavlm.bench.retrieval import load_dataset
from personavlm.cli.app import app
from personavlm.errors import MissingDependencyError, ModelError, ValidationError
from personavlm.interop import load_history
from personavlm.models import OpenAIChatModel
from personavlm.synth import ALIGNMENT_TASK, TASKS, Paraphraser, User, build_user, synthesize
from personavlm.synth.generate import DROPPABLE, MAX_DROPPED, drop_order
from personavlm.synth.pictures import (
    BACKGROUNDS,
    FUR_COLOURS,
    MARK_RGB,
    OBJECT_COLOURS,
    Pet,
    Scene,
    draw,
)
from personavlm.synth.style import MARKED
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse

SEED = 11
USERS = 3
TIME = "%Y-%m-%d %H:%M"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    synthesize(out, users=USERS, size="32k", seed=SEED)
    return out


@pytest.fixture(scope="module")
def users() -> list[User]:
    """In-memory users (no pictures drawn): the internals the files omit. Twenty 32k users,
    so that short histories (fewer than 40 turns, some covering fewer tasks) are among them,
    and four 128k users."""
    return [
        build_user(seed=SEED, user_id=f"u{n:03d}", size=size)
        for size, count in (("32k", 20), ("128k", 4))
        for n in range(count)
    ]


# Ground-truth keys and the tasks whose evidence they hold: empty exactly when the user's
# history covers none of those tasks.
_TRUTH_OF = {
    "facts": {"Semantic Information Recall"},
    "people_hobbies": {"Explicit Intent Inference"},
    "open_problems": {"Implicit Intent Recognition"},
    "solved_problem": {"Implicit Intent Recognition"},
    "preferences": {"Latest Preference Recognition", "Implicit Preference Recommendation"},
    "interests": {"Interest Evolution Analysis"},
    "routines": {"Behavioral Pattern Recognition"},
    "goals": {"Long-term Goal Tracking"},
    "relationships": {"Relationship Recognition", "Relationship Dynamics Comprehension"},
    "expertise": {"Tiered Explanation Delivery"},
    "constraints": {"Generalizing to New Scenarios"},
}


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _records(bench: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = _json(bench / "Persona-MME.json")
    return records


def _turns(bench: Path, data_path: str) -> dict[str, dict[str, str]]:
    """Turn id -> the turn, read from a history file (named as the released file names it:
    `./data/Persona-MME/samples/...`, found by its `samples/...` part)."""
    assert data_path.startswith("./data/Persona-MME/samples/"), data_path
    history = _json(bench / data_path.removeprefix("./data/Persona-MME/"))
    return {
        f"s{s}t{t}": turn
        for s, session in enumerate(history["sessions"])
        for t, turn in enumerate(session)
    }


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------- reproducibility, layout


def test_same_seed_and_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(first, users=2, size="32k", seed=5)
    synthesize(second, users=2, size="32k", seed=5)
    synthesize(other, users=2, size="32k", seed=6)
    assert _files(first) == _files(second)
    assert _files(first) != _files(other)
    assert any(name.endswith(".png") for name in _files(first))


def test_layout_and_manifest(bench: Path) -> None:
    manifest = _json(bench / "manifest.json")
    assert manifest["format"] == 1 and manifest["generator"] == "personavlm.synth"
    assert (manifest["seed"], manifest["size"], manifest["users"]) == (SEED, "32k", USERS)
    assert manifest["paraphrase"] is None
    assert set(manifest["questions"]) == {*TASKS, ALIGNMENT_TASK}
    records = _records(bench)
    assert sum(manifest["questions"].values()) == len(records)
    for n in range(USERS):
        world = _json(bench / "worlds" / f"u{n:03d}.json")
        assert world["format"] == 1
        assert "Visual Detail Recall" in world["tasks"] and set(world["tasks"]) <= set(TASKS)
        for key in ("profile", "traits", "pictures"):
            assert world[key], key
        for key, tasks in _TRUTH_OF.items():
            assert bool(world[key]) == bool(tasks & set(world["tasks"])), key


def test_histories_load_with_the_persona_mme_loader(bench: Path) -> None:
    manifest = _json(bench / "manifest.json")
    turns = images = 0
    for n in range(USERS):
        history = load_history(bench / "samples" / "32k" / f"u{n:03d}" / "user_data.json")
        world = _json(bench / "worlds" / f"u{n:03d}.json")
        assert history.turn_count == len(world["traits"]["per_turn"])
        assert history.image_count == len(world["pictures"])
        shown = [(t.session_index, t.turn_index, t.images) for t in history.turns() if t.images]
        assert [f"s{s}t{t}" for s, t, _ in shown] == [p["turn"] for p in world["pictures"]]
        turns += history.turn_count
        images += history.image_count
    assert (turns, images) == (manifest["turns"], manifest["images"])


def test_retrieval_file_loads_with_the_benchmark_loader(bench: Path) -> None:
    dataset = load_dataset(bench / "retrieval.json")
    records = [r for r in _records(bench) if r["question_type"] != ALIGNMENT_TASK]
    assert len(dataset.questions) == len(records)
    assert set(dataset.conversations) == {f"u{n:03d}" for n in range(USERS)}
    assert {q.category for q in dataset.questions} == set(TASKS)
    assert all(e.endswith(":user") for q in dataset.questions for e in q.evidence)
    raw = _json(bench / "retrieval.json")
    pictures = sum(1 for c in raw["conversations"] for t in c["turns"] if "caption" in t)
    assert pictures == _json(bench / "manifest.json")["images"]


# ----------------------------------------------------------------------------- the questions


def test_every_task_has_four_distinct_choices_and_one_answer(bench: Path) -> None:
    records = _records(bench)
    for n in range(USERS):
        mine = [r for r in records if r["id"].startswith(f"u{n:03d}-")]
        covered = _json(bench / "worlds" / f"u{n:03d}.json")["tasks"]
        assert {r["question_type"] for r in mine} == {*covered, ALIGNMENT_TASK}
    assert {r["question_type"] for r in records} == {*TASKS, ALIGNMENT_TASK}
    for record in records:
        if record["question_type"] == ALIGNMENT_TASK:
            assert record["type"] == "Alignment" and "choices" not in record
            pair = record["alignment"]
            assert pair["chosen"] != pair["rejected"]
            continue
        assert record["type"] == TASKS[record["question_type"]]
        choices = record["choices"]
        assert list(choices) == ["(a)", "(b)", "(c)", "(d)"]
        assert len({c.casefold() for c in choices.values()}) == 4
        assert record["answer"] in choices


def test_answer_letters_are_balanced_per_user(users: list[User]) -> None:
    for user in users:
        counts = Counter(q.answer for q in user.questions)
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_evidence_exists_and_is_not_after_the_question(bench: Path) -> None:
    for record in _records(bench):
        turns = _turns(bench, record["data_path"])
        asked = datetime.strptime(record["time"], TIME)
        assert record["evidence"]
        for turn_id in record["evidence"]:
            assert turn_id in turns, (record["id"], turn_id)
            assert datetime.strptime(turns[turn_id]["time"], TIME) <= asked


def test_evidence_turns_state_the_fact(users: list[User]) -> None:
    for user in users:
        said = {t.slot.id: f"{t.user} {t.assistant}".casefold() for t in user.turns}
        for q in user.questions:
            evidence = " ".join(said[e] for e in q.evidence)
            correct = q.choices[q.answer].casefold()
            if q.visual:
                # Only the picture shows it: no text of the picture's turns says it.
                assert not re.search(rf"\b{re.escape(correct)}\b", evidence), q
            else:
                assert q.facts, q.task
                for fact in q.facts:
                    assert fact.casefold() in evidence, (q.task, fact, q.evidence)


def test_mid_history_questions_follow_the_truth_of_their_time(bench: Path) -> None:
    records = _records(bench)
    asked_early = covering = 0
    for n in range(USERS):
        world = _json(bench / "worlds" / f"u{n:03d}.json")
        end = world["questions_asked_at"]
        covering += "Latest Preference Recognition" in world["tasks"]
        for record in records:
            if not record["id"].startswith(f"u{n:03d}-") or record["time"] == end:
                continue
            if record["question_type"] != "Latest Preference Recognition":
                continue
            asked_early += 1
            answer = record["choices"][record["answer"]]
            taste = next(p for p in world["preferences"] if answer in _values(p))
            held = [s["value"] for s in taste["timeline"] if s["since"] <= record["time"]]
            assert held[-1] == answer and taste["timeline"][-1]["value"] != answer
    assert covering and asked_early >= covering


def _values(preference: dict[str, Any]) -> list[str]:
    return [stage["value"] for stage in preference["timeline"]]


_NEVER = "You never told me how it turned out"


def test_goal_questions_offer_never_said_and_it_is_right_when_never_reported(
    bench: Path,
) -> None:
    for record in _records(bench):
        if record["question_type"] != "Long-term Goal Tracking":
            continue
        assert _NEVER in record["choices"].values()
        world = _json(bench / "worlds" / f"{record['id'][:4]}.json")
        goal = next(g for g in world["goals"] if g["stated"]["turn"] in record["evidence"])
        right = record["choices"][record["answer"]] == _NEVER
        assert right == (goal["status"] == "unknown"), (goal, record)
        assert (goal["reported"] is None) == (goal["status"] == "unknown")


def test_never_reported_goals_are_answered_with_never_said(users: list[User]) -> None:
    unknown_right = 0
    for user in users:
        goals = user.truth()["goals"]
        for q in user.questions:
            if q.task != "Long-term Goal Tracking":
                continue
            goal = next(g for g in goals if g["stated"]["turn"] in q.evidence)
            right = q.choices[q.answer] == _NEVER
            assert right == (goal["status"] == "unknown"), (goal, q)
            unknown_right += right
    assert unknown_right >= 1


def test_questions_do_not_give_the_answer_away_by_word_overlap(users: list[User]) -> None:
    """Share of a question's content words found in its evidence turns, averaged."""
    shares = []
    for user in users:
        said = {t.slot.id: _content_words(f"{t.user} {t.assistant}") for t in user.turns}
        for q in user.questions:
            words = _content_words(q.query)
            found = set().union(*(said[e] for e in q.evidence))
            shares.append(len(words & found) / len(words) if words else 0.0)
    assert statistics.fmean(shares) < 0.3


_STOP_WORDS = """the a an and or of to in on for with my me you your is was were are be been it
its this that what which who how do did does have has had at by from as so if any about would
should could can will than then there their they them these those into over up out not just
really again days right now"""
_STOP = frozenset(_STOP_WORDS.split())


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in _STOP}


# -------------------------------------------------------------------------------- pictures


def test_visual_answers_are_in_the_pixels(bench: Path) -> None:
    checked = 0
    for record in _records(bench):
        if record["question_type"] != "Visual Detail Recall":
            continue
        user = record["id"][:4]
        world = _json(bench / "worlds" / f"{user}.json")
        picture = next(p for p in world["pictures"] if p["turn"] == record["evidence"][0])
        image = Image.open(bench / "samples" / "32k" / user / picture["file"]).convert("RGB")
        answer = record["choices"][record["answer"]]
        assert _visible(image, picture["spec"], answer, record["query"]), (record, picture)
        checked += 1
    assert checked >= USERS


def _visible(image: Image.Image, spec: dict[str, Any], answer: str, query: str) -> bool:
    """Whether `answer` can be read off the image, using the spec only to know where to look."""
    if spec["type"] == "pet":
        probes = spec["probes"]
        if answer in FUR_COLOURS:
            return all(image.getpixel(tuple(p)) == FUR_COLOURS[answer] for p in probes["fur"])
        if spec["marking"] == "none":
            return answer == "no markings at all"
        colour = MARK_RGB[spec["marking_colour"]]
        return bool(probes["marking"]) and all(
            image.getpixel(tuple(p)) == colour for p in probes["marking"]
        )
    centres = {
        (obj["kind"], _column(box)): image.getpixel(
            ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
        )
        for obj in spec["objects"]
        for box in obj["boxes"]
    }
    if answer in BACKGROUNDS:
        return image.getpixel(tuple(spec["background_probe"])) == BACKGROUNDS[answer]
    if answer in OBJECT_COLOURS:
        return OBJECT_COLOURS[answer] in centres.values()
    if answer.startswith("a "):  # which object stands at the side the query names
        side = next(s for s, words in _SIDES.items() if words in query)
        return (answer[2:], side) in centres
    count = ("one", "two", "three", "four").index(answer) + 1
    kind = next(o["kind"] for o in spec["objects"] if re.search(rf"\b{o['kind']}", query))
    pixels = [
        image.getpixel(((b[0] + b[2]) // 2, (b[1] + b[3]) // 2))
        for o in spec["objects"]
        if o["kind"] == kind
        for b in o["boxes"]
    ]
    colour = next(OBJECT_COLOURS[o["colour"]] for o in spec["objects"] if o["kind"] == kind)
    return len(pixels) == count and all(p == colour for p in pixels)


_SIDES = {"left": "on the left", "centre": "in the middle", "right": "on the right"}


def _column(box: list[int]) -> str:
    return ("left", "centre", "right")[((box[0] + box[2]) // 2) // 128]


def test_pictures_draw_the_same_bytes_every_time() -> None:
    user = build_user(seed=SEED, user_id="u000", size="32k")
    pictures = [t.picture for t in user.turns if t.picture is not None]
    assert any(isinstance(p, Scene) for p in pictures)
    assert any(isinstance(p, Pet) for p in pictures)
    for picture in pictures[:4]:
        assert draw(picture) == draw(picture)


def test_missing_pillow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    user = build_user(seed=SEED, user_id="u000", size="32k")
    picture = next(t.picture for t in user.turns if t.picture is not None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'personavlm\[bench\]'"):
        draw(picture)


# ------------------------------------------------------------------------- time and shape


def test_turn_counts_sessions_and_time_span(users: list[User]) -> None:
    ranges = {"32k": (20, 100), "128k": (100, 500)}
    for user in users:
        low, high = ranges[user.size]
        assert low <= len(user.turns) <= high
        times = [t.slot.time for t in user.turns]
        assert times == sorted(times)
        assert timedelta(days=14) <= times[-1] - times[0] <= timedelta(days=92)
        sessions = Counter(t.slot.session for t in user.turns)
        assert all(1 <= n <= 8 for n in sessions.values())
        for before, after in zip(user.turns, user.turns[1:], strict=False):
            gap = after.slot.time - before.slot.time
            if after.slot.session == before.slot.session:
                assert timedelta(minutes=1) <= gap < timedelta(minutes=60)
            else:
                assert gap > timedelta(hours=2)


def test_short_histories_cover_fewer_tasks_and_a_run_covers_them_all(
    users: list[User],
) -> None:
    """PAPER's 20-100 turns for 32k: a history too short for every task's evidence covers
    fewer tasks, each covered task fully (questions, evidence, ground truth); a run of
    several users covers all 13."""
    small = [u for u in users if u.size == "32k"]
    assert any(len(u.turns) < 40 for u in small)
    assert any(len(u.tasks) < len(TASKS) for u in small)  # the dropping is exercised
    assert set().union(*(u.tasks for u in small)) == set(TASKS)
    assert set().union(*(u.tasks for u in small[:3])) == set(TASKS)
    for user in users:
        assert "Visual Detail Recall" in user.tasks
        assert len(user.tasks) >= len(TASKS) - MAX_DROPPED
        if len(user.turns) >= 40:
            assert len(user.tasks) == len(TASKS), (user.user_id, len(user.turns))
        # Every covered task is asked (so has evidence), and nothing else is.
        assert {q.task for q in user.questions} == set(user.tasks), user.user_id
        truth = user.truth()
        assert truth["tasks"] == [t for t in TASKS if t in user.tasks]
        for key, tasks in _TRUTH_OF.items():
            assert bool(truth[key]) == bool(tasks & set(user.tasks)), (user.user_id, key)
        # At least a quarter small talk, even in the shortest histories.
        small_talk = sum(1 for t in user.turns if not t.beats)
        assert small_talk >= len(user.turns) / 4, (user.user_id, small_talk)
    spans = [u.turns[-1].slot.time - u.turns[0].slot.time for u in small]
    assert max(spans) >= timedelta(days=35)  # weeks to months across the run


def test_any_three_consecutive_users_cover_every_task() -> None:
    assert "Visual Detail Recall" not in DROPPABLE and len(DROPPABLE) == len(TASKS) - 1
    for seed in (0, SEED):
        orders = [drop_order(seed, "32k", i) for i in range(8)]
        assert all(sorted(order) == sorted(DROPPABLE) for order in orders)
        assert len(set(orders)) > 1  # rotated per user
        for i in range(6):
            dropped = [set(order[:MAX_DROPPED]) for order in orders[i : i + 3]]
            assert not set.intersection(*dropped), (seed, i)
    assert drop_order(1, "32k", 0) != drop_order(2, "32k", 0)  # the order is seeded


def test_about_one_turn_in_six_carries_a_picture(users: list[User]) -> None:
    for user in users:
        share = sum(1 for t in user.turns if t.picture is not None) / len(user.turns)
        assert 0.10 <= share <= 0.25, (user.user_id, user.size, share)


def test_trait_trajectory_has_a_shift(bench: Path) -> None:
    for n in range(USERS):
        traits = _json(bench / "worlds" / f"u{n:03d}.json")["traits"]
        per_turn = traits["per_turn"]
        assert all(1.0 <= row[name] <= 5.0 for row in per_turn for name in traits["order"])
        shift = traits["shifts"][0]
        first, last = per_turn[0][shift["trait"]], per_turn[-1][shift["trait"]]
        assert (first, last) == (shift["before"], shift["after"])
        assert abs(first - last) >= 1.5
        assert per_turn[0]["time"] < shift["start"] < per_turn[-1]["time"]


def test_wording_shows_the_traits_of_the_moment(users: list[User]) -> None:
    shown = 0
    for user in users:
        for turn in user.turns:
            if turn.marker is None:
                continue
            trait, pole = turn.marker.split(":")
            value = user.traits.at(turn.slot.time)[trait]
            assert value >= 3 + MARKED if pole == "high" else value <= 3 - MARKED
            shown += 1
    assert shown > len(users) * 10


def test_alignment_pairs_follow_the_personality_at_their_time(users: list[User]) -> None:
    for user in users:
        before, after = user.alignment[:2]
        shift = user.traits.shifts[0]
        assert before.time < shift.start and before.trait == after.trait == shift.trait
        assert before.pole != after.pole  # the shift crossed the middle
        for pair in user.alignment:
            value = user.traits.at(pair.time)[pair.trait]
            assert (value > 3) == (pair.pole == "high")
            assert pair.chosen != pair.rejected


# ------------------------------------------------------------------------ refusals, the CLI


def test_refuses_a_non_empty_folder_and_bad_arguments(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match="not empty"):
        synthesize(taken, users=1, size="32k", seed=1)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(ValidationError, match="at least 1"):
        synthesize(tmp_path / "new", users=0, size="32k", seed=1)
    with pytest.raises(ValidationError, match="unknown size"):
        synthesize(tmp_path / "new", users=1, size="64k", seed=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    synthesize(empty, users=1, size="32k", seed=1)  # an empty folder is fine
    assert (empty / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--users", "1", "--size", "32k", "--seed", "3"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["users"] == 1 and report["questions"]["Visual Detail Recall"] >= 1
    assert _json(out / "manifest.json")["turns"] == report["turns"]
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert "not empty" in again.output


# ----------------------------------------------------------------------------- paraphrasing


@pytest.fixture
def rewording_server() -> Iterator[ScriptedOpenAIServer]:
    """Rewords every message ("Honestly, ...") but drops the picture marker of image turns,
    which the simulator must catch and count."""

    def handler(request: dict[str, Any]) -> str:
        prompt = request["messages"][-1]["content"]
        text = prompt.split("Message:\n", 1)[1]
        return "Honestly, " + text.replace("<img>", "")

    with ScriptedOpenAIServer(handler) as server:
        yield server


def test_paraphrase_keeps_facts_and_counts_what_it_could_not_use(
    tmp_path: Path, rewording_server: ScriptedOpenAIServer
) -> None:
    model = OpenAIChatModel("scripted", rewording_server.base_url, max_retries=0)
    paraphraser = Paraphraser(model, name="openai:scripted@test")
    summary = synthesize(tmp_path / "p", users=1, size="32k", seed=2, paraphraser=paraphraser)
    stats = _json(tmp_path / "p" / "manifest.json")["paraphrase"]
    assert stats["model"] == "openai:scripted@test"
    assert stats["kept_original"] == summary.images  # every picture turn lost its marker
    assert stats["rewritten"] + stats["kept_original"] == summary.turns
    history = load_history(tmp_path / "p" / "samples" / "32k" / "u000" / "user_data.json")
    texts = [t.user for t in history.turns()]
    assert sum(t.startswith("Honestly, ") for t in texts) == stats["rewritten"]
    assert history.image_count == summary.images  # markers kept where the rewrite lost them
    assert len(rewording_server.requests) == summary.turns


def test_paraphrase_model_errors_propagate_and_leave_nothing(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(lambda _request: ScriptedResponse(status=404)) as server:
        model = OpenAIChatModel("scripted", server.base_url, max_retries=0)
        paraphraser = Paraphraser(model, name="scripted")
        with pytest.raises(ModelError):
            synthesize(tmp_path / "p", users=1, size="32k", seed=2, paraphraser=paraphraser)
    assert list(tmp_path.iterdir()) == []


def test_the_core_library_does_not_import_the_simulator() -> None:
    code = (
        "import sys, personavlm, personavlm.agent, personavlm.bench.retrieval, "
        "personavlm.cli.app; "
        "print([m for m in sys.modules if m.startswith('personavlm.synth')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
