"""The oracle teacher: a ChatModel that answers the agent's calls from a simulated world.

The simulator knows every user's ground truth, so a teacher can answer each call the agent
makes the way a perfect model would. The agent builds its prompts as it always does; the
oracle only writes the replies. Recorded (`recorder.py`), the calls are SFT samples in the
agent's own formats (tags protocol):

- update phase: the personality reading of the turn, the semantic candidate, and at session
  close the episodic topics, core and procedural memory (`targets.py`);
- response phase: `<think>` + `<retrieve>` with keywords taken from the question, then, once
  the evidence is among the retrieved memories, `<think>` quoting it + `<answer>` with the
  correct option. Alignment items are answered from the personality in the context.

The driver (`world_samples.py`) tells the oracle where it is: the user, the turn being
recorded, the session being closed, the question being asked. A call the oracle cannot
place is a ModelResponseError, never a made-up reply.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personavlm.bench.mcq import Item
from personavlm.errors import ModelResponseError
from personavlm.models.base import Message, Reply, Usage
from personavlm.personality import TRAITS
from personavlm.synth.dialogue import Turn as WorldTurn
from personavlm.synth.generate import User
from personavlm.train import targets
from personavlm.train.recorder import call_kind, text_of

__all__ = ["Oracle", "Question"]

# Words too common to search with (the agent's BM25 drops a similar list; the dense half
# would only blur on them).
_STOP_WORDS = """
a an and are as at be by can did do does for from had has have how i i'm in is it its me
my of on or right so that the their them then there these they this to was what when
where which who why will with would you your now lately currently days most often usually
best ever should could shall might must may put get got go going tell know think say said
like want need also just any some thing things something much many more lot
"""
_STOP = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'&-]+")


@dataclass(frozen=True, slots=True)
class Question:
    """The item being asked and its evidence turns in the world."""

    item: Item
    evidence: tuple[WorldTurn, ...]


@dataclass
class Oracle:
    """Answers the agent's calls for the world of `user` (set by the driver)."""

    user: User | None = None
    turn: WorldTurn | None = None  # the exchange being recorded
    closing: int | None = None  # the session being closed
    question: Question | None = None
    # Evidence never surfaced for these items: the driver drops their samples.
    unanswered: set[str] = field(default_factory=set)
    _semantic: dict[str, targets.SemanticTarget] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "oracle"

    def set_user(self, user: User) -> None:
        self.user = user
        self._semantic = targets.turn_targets(user)
        self.turn = self.closing = self.question = None

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply:
        started = time.perf_counter()
        text = self._reply(messages)
        words = sum(len(text_of(m).split()) for m in messages)
        return Reply(
            text, Usage(words, len(text.split())), "oracle", time.perf_counter() - started, "stop"
        )

    # ------------------------------------------------------------------ dispatch

    def _reply(self, messages: Sequence[Message]) -> str:
        kind = call_kind(messages)
        user = self._need(self.user, "a user")
        if kind == "reasoning":
            return self._respond(messages)
        if kind in ("personality", "semantic"):
            turn = self._need(self.turn, "the turn being recorded")
            if kind == "personality":
                return targets.render_reading(targets.reading_target(user, turn))
            return targets.render_semantic(self._semantic[turn.slot.id])
        if kind in ("episodic", "core", "procedural"):
            session = self._need(self.closing, "the session being closed")
            self._check_session(messages, session)
            if kind == "episodic":
                return targets.render_topics(targets.session_topics(user, session))
            if kind == "core":
                return targets.render_key_values(targets.core_target(user, session))
            return targets.render_key_values(targets.procedural_target(user, session))
        raise ModelResponseError(
            f"the oracle answers the tags protocol's calls only; got a {kind or 'foreign'} call"
        )

    @staticmethod
    def _need(value: Any, what: str) -> Any:
        if value is None:
            raise ModelResponseError(f"the oracle was called without {what}: a driver bug")
        return value

    def _check_session(self, messages: Sequence[Message], session: int) -> None:
        # The store's sessions follow the 60-minute rule; the world's are 2+ hours apart, so
        # they are the same sessions. If that ever breaks, the targets would be misplaced.
        user = self._need(self.user, "a user")
        expected = sum(1 for t in user.turns if t.slot.session == session)
        # One `Time:` line opens each exchange of the session in the tags prompts.
        shown = len(re.findall(r"^Time: \d{4}-", text_of(messages[-1]), flags=re.MULTILINE))
        if shown != expected:
            raise ModelResponseError(
                f"session {session} of {user.user_id} has {expected} exchanges in the world "
                f"but the agent shows {shown}"
            )

    # ------------------------------------------------------------------ response phase

    def _respond(self, messages: Sequence[Message]) -> str:
        question = self._need(self.question, "the question being asked")
        item = question.item
        rounds = sum(1 for m in messages if m.role == "assistant")
        if item.kind == "alignment":
            opening = next(m for m in messages if m.role == "user")  # the prompt itself
            return _alignment_answer(item, text_of(opening))
        if rounds == 0:
            keywords = question_keywords(item.query)
            return _step(_vary(item.id, _FIRST_THOUGHTS).format(topic=keywords), keywords)
        found = _found(question, text_of(messages[-1]), self._semantic)
        if found is None:
            if rounds == 1:
                keywords = _fallback_keywords(question)
                thought = _vary(item.id, _AGAIN_THOUGHTS).format(topic=keywords)
                return _step(thought, keywords)
            self.unanswered.add(item.id)  # no evidence: the driver drops this sample
            return _answer("I could not find it in memory; answering from the options.", item)
        return _answer(_vary(item.id, _FOUND_THOUGHTS).format(evidence=found), item)


# Several wordings per step, picked by the item id, so samples do not all read alike.
_FIRST_THOUGHTS = (
    "The user asks about {topic}. That depends on what they told me before, so I should "
    "search my memory of our conversations for it.",
    "To answer I need what the user said earlier about {topic}. Let me look it up.",
    "This is about {topic}, which I only know from past conversations. I will retrieve it "
    "before answering.",
)
_AGAIN_THOUGHTS = (
    "Nothing retrieved settles it. I will search again with other words: {topic}.",
    "The memories found do not answer the question. Trying again with {topic}.",
)
_FOUND_THOUGHTS = (
    "The retrieved memory says: {evidence}. That settles the question.",
    "I found it: {evidence}. The answer follows from this.",
    "From our past conversations: {evidence}. So I can answer.",
)


def _vary(key: str, options: Sequence[str]) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return options[digest[0] % len(options)]


def _step(thought: str, keywords: str) -> str:
    return (
        f"<think>{thought}</think>\n<retrieve>\n"
        f'"keywords": {keywords}\n"start_time": null\n"end_time": null\n</retrieve>'
    )


def _answer(thought: str, item: Item) -> str:
    option = item.choices[item.answer]
    return f"<think>{thought}</think>\n<answer>({item.answer}) {option}</answer>"


def question_keywords(query: str) -> str:
    """Content words of the question, as a model could pick them (nothing from the answer)."""
    words = [w.lower() for w in _WORD.findall(query) if w.lower() not in _STOP]
    return ", ".join(dict.fromkeys(words)) or query.strip()


def _fallback_keywords(question: Question) -> str:
    # The evidence turns' key strings that no option contains: names, places and settings
    # the user used, never the answer itself.
    options = " ".join(question.item.choices.values()).lower()
    facts = [
        f
        for turn in question.evidence
        for f in turn.facts
        if f.lower() not in options and not any(o in f.lower() for o in options.split())
    ]
    base = question_keywords(question.item.query)
    return ", ".join(dict.fromkeys([*facts, base])) if facts else base


def _normal(text: str) -> str:
    return " ".join(text.lower().replace("&lt;", "<").split())


def _found(
    question: Question, retrieved: str, semantic: Mapping[str, targets.SemanticTarget]
) -> str | None:
    """A quote of the evidence if the retrieved memories hold every evidence turn (its own
    words, or the semantic memory made of it), else None."""
    shown = _normal(retrieved)
    quotes = []
    for turn in question.evidence:
        words = " ".join(turn.user.replace("<img>", " ").split())
        fact = semantic.get(turn.slot.id)
        memory = fact.content if fact is not None and fact.decision else ""
        if words and _normal(words)[:60] in shown:
            quotes.append(f'"{words}"')
        elif memory and _normal(memory) in shown:
            quotes.append(f'"{memory}"')
        else:
            return None
    return "; ".join(quotes)


def _alignment_answer(item: Item, context: str) -> str:
    traits = re.findall(r"(" + "|".join(TRAITS) + r")\D{0,20}?(\d(?:\.\d)?)", context, re.I)
    values = {name.lower(): float(value) for name, value in traits}
    marked = sorted(values.items(), key=lambda kv: -abs(kv[1] - 3.0))[:2]
    shown = ", ".join(f"{name} {value:.1f}" for name, value in marked) or "their traits"
    fits = item.choices[item.answer].strip().lower().startswith("yes")
    verdict = "matches" if fits else "does not match"
    thought = (
        f"The user's personality profile shows {shown}. The tone and approach of the reply "
        f"{verdict} someone like that."
    )
    return _answer(thought, item)
