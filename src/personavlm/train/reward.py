"""The GRPO reward of PersonaVLM (PAPER.md section 5): r = f_acc * f_cons + 0.5 * f_format.

The trained model ends an episode with `<think>reasoning</think><answer>answer</answer>`.
One completion (its final model turn) is scored as follows, in [0, 1.5]:

- No `</answer>` anywhere: reward 0, and no judge is asked.
- f_format is 1 when the text is exactly one `<think>` block then one `<answer>` block, both
  non-empty, with only whitespace around and between them; otherwise 0.
- The answer is the text between the last `<answer>` and the last `</answer>`, read even when
  the format is broken (f_format 0 then, but f_acc and f_cons still count). The reasoning is
  the last `<think>...</think>` block before that answer.
- f_acc, choice questions (multiple choice, and yes/no items written as `(a) Yes` / `(b) No`):
  1 when `bench.mcq.robust_letter` reads the reference letter from the answer, else 0 (an
  answer naming no option or several is 0). Open questions: an LLM judge's 0..10 score / 10.
- f_cons: an LLM judge's 0..10 score / 10 of how well the reasoning supports the answer.
- Two judge calls are skipped because their result cannot change the reward: f_cons is not
  asked when f_acc is 0 (the product is 0 whatever it says), and it is 0 without asking when
  there is no reasoning text (nothing supports the answer).
- A judge that fails (server errors, or no score 0..10 in its reply after `attempts` tries)
  gives 0.5, never silently: `OpenAIJudge` logs a warning naming the aspect and the error and
  counts it in `stats`; each `RewardBreakdown` counts its fallbacks; `PersonaReward` logs the
  batch's count and reports it as the `reward/judge_fallbacks` metric.

Usage:

    from personavlm.models.openai import OpenAIChatModel
    from personavlm.train.reward import OpenAIJudge, PersonaReward, RewardItem, score

    judge = OpenAIJudge(OpenAIChatModel("Qwen/Qwen3-30B-A3B", "http://127.0.0.1:8000/v1"))
    item = RewardItem(
        kind="choice",
        question="Which drink do I prefer these days?",
        reference="b",
        choices={"a": "Coffee", "b": "Green tea"},
        completion="<think>She switched to tea last week.</think><answer>(b)</answer>",
    )
    score(item, judge).total  # 1 * f_cons + 0.5

    # As a TRL reward function; the dataset has columns kind, question, reference, choices.
    trainer = GRPOTrainer(..., reward_funcs=[PersonaReward(judge)])
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib import resources
from string import Template
from typing import Any, Literal, Protocol

from personavlm.bench.mcq import robust_letter
from personavlm.errors import ConfigError, ModelError, ModelResponseError, ValidationError
from personavlm.models.base import ChatModel, Message

__all__ = [
    "FALLBACK_VALUE",
    "FORMAT_WEIGHT",
    "Aspect",
    "Judge",
    "JudgeRequest",
    "JudgeScore",
    "JudgeStats",
    "OpenAIJudge",
    "ParsedCompletion",
    "PersonaReward",
    "RewardBreakdown",
    "RewardItem",
    "batch_items",
    "completion_text",
    "parse_completion",
    "parse_judge_score",
    "score",
]

_LOG = logging.getLogger("personavlm.train.reward")

FORMAT_WEIGHT = 0.5
FALLBACK_VALUE = 0.5
_MAX_SCORE = 10
_REPLY_EXCERPT = 120

ItemKind = Literal["choice", "open"]
Aspect = Literal["accuracy", "consistency"]
_KINDS: frozenset[str] = frozenset({"choice", "open"})
_ASPECTS: tuple[Aspect, ...] = ("accuracy", "consistency")
_LETTER = re.compile(r"[a-z]")


# -- the item and its score -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RewardItem:
    """One completion to score, with the question it answers.

    `reference` is the correct letter for a choice question ("b") and the reference answer
    text for an open one. `choices` maps lower-case letters to option texts for a choice
    question and is empty for an open one. `completion` is the final model turn's text.
    """

    kind: ItemKind
    question: str
    reference: str
    choices: Mapping[str, str]
    completion: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValidationError(
                f"reward item kind {self.kind!r} is unknown; use 'choice' or 'open'"
            )
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValidationError("reward item question is empty; pass the question as asked")
        if not isinstance(self.completion, str):
            raise ValidationError(
                f"reward item completion must be the final turn's text (a str), "
                f"got {type(self.completion).__name__}"
            )
        if self.kind == "choice":
            _check_choice(self.reference, self.choices)
        else:
            _check_open(self.reference, self.choices)


def _check_choice(reference: str, choices: Mapping[str, str]) -> None:
    if not choices:
        raise ValidationError(
            "choice reward item has no choices; pass them as {'a': text, 'b': text, ...}, "
            "or use kind='open'"
        )
    for letter, text in choices.items():
        if not (isinstance(letter, str) and _LETTER.fullmatch(letter)):
            raise ValidationError(
                f"choice letter {letter!r} is not a single lower-case letter a-z; "
                "key the choices as 'a', 'b', ..."
            )
        if not isinstance(text, str):
            raise ValidationError(f"choice ({letter}) text must be a str, got {text!r}")
    if reference not in choices:
        raise ValidationError(
            f"choice reward item reference {reference!r} is not one of its choices "
            f"{sorted(choices)}; pass the correct option's lower-case letter"
        )


def _check_open(reference: str, choices: Mapping[str, str]) -> None:
    if choices:
        raise ValidationError(
            f"open reward item has choices {sorted(choices)}; open items take none "
            "(use kind='choice' for a question with options)"
        )
    if not isinstance(reference, str) or not reference.strip():
        raise ValidationError(
            "open reward item reference is empty; pass the reference answer text the judge "
            "compares against"
        )


@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    """The reward of one completion and its parts.

    `answered` is whether `</answer>` occurs; `judge_calls` counts the judge requests made
    for this item and `fallbacks` those that fell back to 0.5.
    """

    total: float
    accuracy: float
    consistency: float
    format: float
    answered: bool
    fallbacks: int
    judge_calls: int


# -- reading a completion ---------------------------------------------------------------------

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_EXACT_FORMAT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParsedCompletion:
    """What a completion holds.

    `answer`: the stripped text between the last `<answer>` and the last `</answer>`, or None
    when there is no such pair. `think`: the stripped text of the last `<think>...</think>`
    block before that answer (before the end of the text when there is no answer), or None.
    `format_ok`: the text is exactly `<think>..</think><answer>..</answer>` (see the module
    docstring). `has_answer_close`: `</answer>` occurs at all.
    """

    think: str | None
    answer: str | None
    format_ok: bool
    has_answer_close: bool


def parse_completion(text: str) -> ParsedCompletion:
    """Read the reasoning, the answer and the format of one completion."""
    answer_at, answer = _last_answer(text)
    think = _last_think(text[:answer_at] if answer_at is not None else text)
    return ParsedCompletion(
        think=think,
        answer=answer,
        format_ok=_format_ok(text),
        has_answer_close="</answer>" in text,
    )


def _last_answer(text: str) -> tuple[int | None, str | None]:
    """Where the last `<answer>` before the last `</answer>` starts, and the text between."""
    close = text.rfind("</answer>")
    if close < 0:
        return None, None
    opening = text.rfind("<answer>", 0, close)
    if opening < 0:
        return None, None
    return opening, text[opening + len("<answer>") : close].strip()


def _last_think(text: str) -> str | None:
    blocks = _THINK_BLOCK.findall(text)
    return str(blocks[-1]).strip() if blocks else None


def _format_ok(text: str) -> bool:
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    match = _EXACT_FORMAT.fullmatch(text)
    return match is not None and bool(match.group(1).strip()) and bool(match.group(2).strip())


# -- judges -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """One question to a judge: `aspect` "accuracy" compares `answer` with `reference`;
    "consistency" asks how well `reasoning` supports `answer` (`reference` may be empty)."""

    aspect: Aspect
    question: str
    reference: str
    reasoning: str
    answer: str

    def __post_init__(self) -> None:
        if self.aspect not in _ASPECTS:
            raise ValidationError(
                f"judge aspect {self.aspect!r} is unknown; use 'accuracy' or 'consistency'"
            )


@dataclass(frozen=True, slots=True)
class JudgeScore:
    """A judge's verdict: `value` in [0, 1] (the raw 0..10 score / 10, or 0.5 on fallback),
    `raw` the integer the judge gave (None on fallback), `error` why it fell back."""

    value: float
    raw: int | None
    fallback: bool
    error: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValidationError(f"judge score value must be in [0, 1], got {self.value!r}")
        if self.raw is not None and not 0 <= self.raw <= _MAX_SCORE:
            raise ValidationError(f"judge raw score must be 0..10 or None, got {self.raw!r}")


class Judge(Protocol):
    """Anything that scores a `JudgeRequest`; it must not raise for a flaky model, but fall
    back (`JudgeScore.fallback`) and say so."""

    def score(self, request: JudgeRequest) -> JudgeScore: ...


@dataclass(frozen=True, slots=True)
class JudgeStats:
    """Running counts of an `OpenAIJudge`: requests scored, model calls made, fallbacks."""

    calls: int
    attempts: int
    fallbacks: int


def parse_judge_score(reply: str) -> int | None:
    """The first number in `reply` when it is an integer 0..10; None otherwise.

    Closed `<think>...</think>` blocks (reasoning judges such as Qwen3) are skipped; an
    unclosed one means the reply was cut off while thinking, so there is no score. A first
    number that is negative, has decimals or exceeds 10 is no score either (nothing after it
    is tried: the judge did not follow the instruction).
    """
    text = _THINK_BLOCK.sub(" ", reply)
    if "<think>" in text:
        return None
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    if match is None or not match.group().isdigit():
        return None
    value = int(match.group())
    return value if value <= _MAX_SCORE else None


def _template(name: str) -> Template:
    path = resources.files("personavlm.train").joinpath("prompts", name)
    try:
        return Template(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"the judge prompt {name} is missing from personavlm.train/prompts ({exc}); "
            "reinstall personavlm"
        ) from exc


class OpenAIJudge:
    """A `Judge` asking a chat model (the paper's: Qwen3-30B-A3B served OpenAI-compatible).

    The prompt is `train/prompts/judge_<aspect>.txt` with `$question`, `$reference`,
    `$reasoning` and `$answer` filled in; the reply must hold an integer 0..10 (read by
    `parse_judge_score`). A reply without one, or a `ModelError` from the model, is a failed
    attempt; after `attempts` failed attempts in all the score falls back to 0.5, with a
    warning on the `personavlm.train.reward` logger. Safe to share between threads.
    """

    def __init__(self, model: ChatModel, *, attempts: int = 2, max_tokens: int = 16) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"judge attempts must be an integer >= 1, got {attempts!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"judge max_tokens must be an integer >= 1, got {max_tokens!r}")
        self._model = model
        self._attempts = attempts
        self._max_tokens = max_tokens
        self._templates = {aspect: _template(f"judge_{aspect}.txt") for aspect in _ASPECTS}
        self._lock = threading.Lock()
        self._calls = 0
        self._model_calls = 0
        self._fallbacks = 0

    @property
    def stats(self) -> JudgeStats:
        with self._lock:
            return JudgeStats(self._calls, self._model_calls, self._fallbacks)

    def prompt(self, request: JudgeRequest) -> str:
        """The text sent to the judge model for `request`."""
        return (
            self._templates[request.aspect]
            .substitute(
                question=request.question,
                reference=request.reference,
                reasoning=request.reasoning,
                answer=request.answer,
            )
            .strip()
        )

    def score(self, request: JudgeRequest) -> JudgeScore:
        messages = [Message.text("user", self.prompt(request))]
        error = ""
        for attempt in range(1, self._attempts + 1):
            raw, error = self._attempt(messages)
            if raw is not None:
                self._count(fallback=False)
                return JudgeScore(value=raw / _MAX_SCORE, raw=raw, fallback=False)
            _LOG.debug("%s judge attempt %d failed: %s", request.aspect, attempt, error)
        self._count(fallback=True)
        _LOG.warning(
            "%s judge fell back to %.1f after %d failed attempt(s): %s",
            request.aspect,
            FALLBACK_VALUE,
            self._attempts,
            error,
        )
        return JudgeScore(value=FALLBACK_VALUE, raw=None, fallback=True, error=error)

    def _attempt(self, messages: Sequence[Message]) -> tuple[int | None, str]:
        """One model call: the score, or None and why there is none."""
        with self._lock:
            self._model_calls += 1
        try:
            reply = self._model.generate(messages, max_tokens=self._max_tokens, temperature=0.0)
        except ModelError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        raw = parse_judge_score(reply.text)
        if raw is None:
            excerpt = reply.text[:_REPLY_EXCERPT]
            return None, f"the reply {excerpt!r} holds no integer score 0-10"
        return raw, ""

    def _count(self, *, fallback: bool) -> None:
        with self._lock:
            self._calls += 1
            self._fallbacks += int(fallback)


# -- the reward -------------------------------------------------------------------------------


@dataclass
class _JudgeCalls:
    """The judge of one `score` call, counting what it was asked."""

    judge: Judge | None
    calls: int = 0
    fallbacks: int = 0

    def ask(self, request: JudgeRequest) -> float:
        if self.judge is None:
            raise ConfigError(
                f"a judge is required to score {request.aspect} here; pass a Judge "
                "(e.g. OpenAIJudge) to score()"
            )
        verdict = self.judge.score(request)
        self.calls += 1
        self.fallbacks += int(verdict.fallback)
        return verdict.value


def score(item: RewardItem, judge: Judge | None) -> RewardBreakdown:
    """The paper's reward of one completion (see the module docstring for every rule).

    `judge` may be None only when no judge call is needed (a choice item answered wrongly,
    or no answer at all); otherwise ConfigError.
    """
    parsed = parse_completion(item.completion)
    if not parsed.has_answer_close:
        return RewardBreakdown(0.0, 0.0, 0.0, 0.0, answered=False, fallbacks=0, judge_calls=0)
    calls = _JudgeCalls(judge)
    accuracy = _accuracy(item, parsed, calls)
    consistency = _consistency(item, parsed, accuracy, calls)
    form = 1.0 if parsed.format_ok else 0.0
    return RewardBreakdown(
        total=accuracy * consistency + FORMAT_WEIGHT * form,
        accuracy=accuracy,
        consistency=consistency,
        format=form,
        answered=True,
        fallbacks=calls.fallbacks,
        judge_calls=calls.calls,
    )


def _accuracy(item: RewardItem, parsed: ParsedCompletion, calls: _JudgeCalls) -> float:
    if not parsed.answer:
        return 0.0  # `</answer>` without `<answer>`, or an empty answer: nothing to grade
    if item.kind == "choice":
        return 1.0 if robust_letter(parsed.answer, item.choices) == item.reference else 0.0
    request = JudgeRequest(
        aspect="accuracy",
        question=item.question,
        reference=item.reference,
        reasoning=parsed.think or "",
        answer=parsed.answer,
    )
    return calls.ask(request)


def _consistency(
    item: RewardItem, parsed: ParsedCompletion, accuracy: float, calls: _JudgeCalls
) -> float:
    # accuracy 0 makes the product 0 whatever the judge says: skip the call.
    if accuracy == 0.0 or not parsed.answer:
        return 0.0
    # No reasoning, nothing that supports the answer.
    if not parsed.think:
        return 0.0
    request = JudgeRequest(
        aspect="consistency",
        question=item.question,
        reference="",
        reasoning=parsed.think,
        answer=parsed.answer,
    )
    return calls.ask(request)


# -- TRL ----------------------------------------------------------------------------------------

_COLUMNS = ("kind", "question", "reference", "choices")


class PersonaReward:
    """The reward as a TRL `GRPOTrainer` reward function.

    TRL calls it as `reward(prompts=..., completions=..., **columns)`, each dataset column a
    list with one value per completion, plus extras (`trainer_state`, `log_extra`, ...) that
    are ignored except `log_metric`. The columns read: `kind`, `question`, `reference`,
    `choices` (a dict letter -> text, empty for open items; None values, which HF datasets
    add for keys other rows have, are dropped) and, when the rollout adds it, `final_turn`
    (the last model turn's text), which is scored in place of the completion.

    Returns the totals in order; reports the batch means `reward/format_rate`,
    `reward/answered_rate`, `reward/accuracy`, `reward/consistency` and the batch's count
    `reward/judge_fallbacks` through `log_metric`. Judge calls run on up to `max_workers`
    threads.

    The paper's 0.5 fallback covers a judge call that fails now and then. A batch in which
    every one of at least `down_after` judge calls fell back means the judge is down or
    misconfigured (wrong URL, model or key): that raises ModelResponseError instead of
    training on a constant reward.
    """

    def __init__(self, judge: Judge, *, max_workers: int = 8, down_after: int = 4) -> None:
        if judge is None:
            raise ConfigError("PersonaReward needs a judge (e.g. OpenAIJudge); none was given")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self._judge = judge
        self._max_workers = max_workers
        self._down_after = down_after
        self._last: tuple[RewardBreakdown, ...] = ()
        # TRL names the reward's column and metrics after the function's __name__.
        self.__name__ = "persona_reward"

    @property
    def last(self) -> tuple[RewardBreakdown, ...]:
        """The breakdowns of the last batch scored, in order."""
        return self._last

    def __call__(
        self,
        prompts: Sequence[object] | None = None,
        completions: Sequence[object] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        items = batch_items(completions, kwargs)
        breakdowns = self._score_all(items)
        self._last = tuple(breakdowns)
        fallbacks = sum(b.fallbacks for b in breakdowns)
        if fallbacks:
            calls = sum(b.judge_calls for b in breakdowns)
            _LOG.warning(
                "%d of %d judge calls in this batch of %d fell back to %.1f",
                fallbacks,
                calls,
                len(breakdowns),
                FALLBACK_VALUE,
            )
            if fallbacks == calls >= self._down_after:
                raise ModelResponseError(
                    f"the judge failed on all {calls} calls of this batch (each would have "
                    f"scored {FALLBACK_VALUE}); check the judge's URL, model name and API key"
                )
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and breakdowns:
            _report(log_metric, breakdowns)
        return [b.total for b in breakdowns]

    def _score_all(self, items: Sequence[RewardItem]) -> list[RewardBreakdown]:
        one = partial(score, judge=self._judge)
        workers = min(self._max_workers, len(items))
        if workers <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="persona-reward") as pool:
            return list(pool.map(one, items))  # map keeps the input order


def _report(log_metric: Callable[[str, float], object], batch: Sequence[RewardBreakdown]) -> None:
    n = len(batch)
    log_metric("reward/format_rate", sum(b.format for b in batch) / n)
    log_metric("reward/answered_rate", sum(b.answered for b in batch) / n)
    log_metric("reward/accuracy", sum(b.accuracy for b in batch) / n)
    log_metric("reward/consistency", sum(b.consistency for b in batch) / n)
    log_metric("reward/judge_fallbacks", float(sum(b.fallbacks for b in batch)))


def batch_items(
    completions: Sequence[object] | None, columns: Mapping[str, Any]
) -> list[RewardItem]:
    """The `RewardItem`s of one TRL batch: dataset columns plus completions (or final_turn)."""
    missing = [name for name in _COLUMNS if name not in columns]
    if missing:
        raise ConfigError(
            f"the reward needs dataset columns {', '.join(_COLUMNS)}; missing: {', '.join(missing)}"
        )
    texts = _final_texts(completions, columns.get("final_turn"))
    n = len(texts)
    for name in _COLUMNS:
        if len(columns[name]) != n:
            raise ValidationError(
                f"reward column {name!r} has {len(columns[name])} values for {n} completions"
            )
    items = []
    for i in range(n):
        try:
            items.append(
                RewardItem(
                    kind=columns["kind"][i],
                    question=columns["question"][i],
                    reference=columns["reference"][i],
                    choices=_choices(columns["choices"][i]),
                    completion=texts[i],
                )
            )
        except ValidationError as exc:
            raise ValidationError(f"reward row {i}: {exc}") from exc
    return items


def _final_texts(completions: Sequence[object] | None, final_turn: object) -> list[str]:
    if final_turn is not None:
        if not isinstance(final_turn, Sequence) or isinstance(final_turn, str):
            raise ValidationError("the final_turn column must be a list of str, one per completion")
        if completions is not None and len(completions) != len(final_turn):
            raise ValidationError(
                f"final_turn has {len(final_turn)} values for {len(completions)} completions"
            )
        for i, text in enumerate(final_turn):
            if not isinstance(text, str):
                raise ValidationError(f"final_turn row {i} is {type(text).__name__}, not str")
        return list(final_turn)
    if completions is None:
        raise ValidationError("no completions and no final_turn column: nothing to score")
    return [completion_text(c) for c in completions]


def completion_text(completion: object) -> str:
    """A TRL completion's text: the str itself, or the last assistant message's content
    (a str, or text parts `{"type": "text", "text": ...}` joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        for message in reversed(completion):
            if isinstance(message, Mapping) and message.get("role") == "assistant":
                return _content_text(message.get("content"))
    raise ValidationError(
        f"a completion must be a str or a list of messages with an assistant turn, "
        f"got {str(completion)[:_REPLY_EXCERPT]!r}"
    )


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
        return "".join(texts)
    raise ValidationError(f"an assistant message's content is {type(content).__name__}, not text")


def _choices(raw: object) -> dict[str, str]:
    """A row's choices; None values (HF datasets fill keys other rows have) are dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError(f"choices must be a dict letter -> text, got {type(raw).__name__}")
    return {letter: text for letter, text in raw.items() if text is not None}
