"""The GRPO reward (PAPER.md section 5): every branch on hand-made completions, the OpenAI
judge against the scripted HTTP server, and the TRL reward-function adapter."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from personavlm.errors import ConfigError, ValidationError
from personavlm.models.openai import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse, scripted
from personavlm.train.reward import (
    JudgeRequest,
    JudgeScore,
    JudgeStats,
    OpenAIJudge,
    PersonaReward,
    RewardItem,
    completion_text,
    parse_completion,
    parse_judge_score,
    score,
)

CHOICES = {"a": "Coffee", "b": "Green tea", "c": "Orange juice"}
QUESTION = "Which drink do I prefer these days?"


class FakeJudge:
    """Scores by aspect from fixed raw values (or a function of the request); records calls."""

    def __init__(
        self,
        accuracy: int = 10,
        consistency: int = 10,
        *,
        fallback: bool = False,
        by_request: Callable[[JudgeRequest], int] | None = None,
    ) -> None:
        self.raw = {"accuracy": accuracy, "consistency": consistency}
        self.fallback = fallback
        self.by_request = by_request
        self.requests: list[JudgeRequest] = []
        self._lock = threading.Lock()

    def score(self, request: JudgeRequest) -> JudgeScore:
        with self._lock:
            self.requests.append(request)
        if self.fallback:
            return JudgeScore(value=0.5, raw=None, fallback=True, error="scripted failure")
        raw = self.by_request(request) if self.by_request else self.raw[request.aspect]
        return JudgeScore(value=raw / 10, raw=raw, fallback=False)

    def aspects(self) -> list[str]:
        return [r.aspect for r in self.requests]


def choice(completion: str, reference: str = "b") -> RewardItem:
    return RewardItem(
        kind="choice",
        question=QUESTION,
        reference=reference,
        choices=CHOICES,
        completion=completion,
    )


def open_item(completion: str) -> RewardItem:
    return RewardItem(
        kind="open",
        question="What did I say about my sister's wedding?",
        reference="It is in June in Lisbon.",
        choices={},
        completion=completion,
    )


GOOD = "<think>She switched to tea last week.</think>\n<answer>(b) Green tea</answer>"


# -- parse_completion ---------------------------------------------------------------------------


def test_parse_exact_format_with_whitespace_around_and_between() -> None:
    parsed = parse_completion("\n  <think> why </think>\n\n<answer> (b) </answer>\n")
    assert parsed.format_ok
    assert parsed.has_answer_close
    assert parsed.think == "why"
    assert parsed.answer == "(b)"


@pytest.mark.parametrize(
    "text",
    [
        "Sure! <think>why</think><answer>(b)</answer>",  # text before
        "<think>why</think><answer>(b)</answer> Hope that helps.",  # text after
        "<think>why</think> so <answer>(b)</answer>",  # text between
        "<answer>(b)</answer>",  # no think
        "<think></think><answer>(b)</answer>",  # empty think
        "<think>why</think><answer>  </answer>",  # empty answer
        "<think>why</think><answer>(a)</answer><answer>(b)</answer>",  # two answers
        "<think>a</think><think>b</think><answer>(b)</answer>",  # two thinks
        "<think>why<think>more</think><answer>(b)</answer>",  # tag repeated inside
        "<answer>(b)</answer><think>why</think>",  # wrong order
    ],
)
def test_parse_broken_format(text: str) -> None:
    parsed = parse_completion(text)
    assert not parsed.format_ok
    assert parsed.has_answer_close


def test_parse_reads_last_answer_and_the_think_before_it() -> None:
    parsed = parse_completion(
        "<think>first</think><answer>(a)</answer> wait <think>second</think><answer>(b)</answer>"
    )
    assert parsed.answer == "(b)"
    assert parsed.think == "second"
    assert not parsed.format_ok


def test_parse_without_answer_close() -> None:
    parsed = parse_completion("<think>why</think><answer>(b)")
    assert not parsed.has_answer_close
    assert parsed.answer is None
    assert parsed.think == "why"


def test_parse_close_without_open_has_no_answer() -> None:
    parsed = parse_completion("<think>why</think>(b)</answer>")
    assert parsed.has_answer_close
    assert parsed.answer is None
    assert not parsed.format_ok


# -- score: choice questions ----------------------------------------------------------------------


def test_perfect_format_correct_letter_full_consistency_is_1_5() -> None:
    judge = FakeJudge(consistency=10)
    result = score(choice(GOOD), judge)
    assert result.total == pytest.approx(1.5)
    assert (result.accuracy, result.consistency, result.format) == (1.0, 1.0, 1.0)
    assert result.answered
    assert result.judge_calls == 1
    assert result.fallbacks == 0
    # A choice answer's accuracy needs no judge: only consistency is asked.
    assert judge.aspects() == ["consistency"]
    request = judge.requests[0]
    assert request.question == QUESTION
    assert request.reasoning == "She switched to tea last week."
    assert request.answer == "(b) Green tea"


def test_correct_letter_consistency_7_is_1_2() -> None:
    result = score(choice(GOOD), FakeJudge(consistency=7))
    assert result.total == pytest.approx(0.7 * 1 + 0.5)
    assert result.consistency == pytest.approx(0.7)


def test_wrong_letter_gets_format_only_and_no_consistency_call() -> None:
    judge = FakeJudge()
    result = score(choice(GOOD, reference="a"), judge)
    assert result.total == pytest.approx(0.5)
    assert (result.accuracy, result.consistency, result.format) == (0.0, 0.0, 1.0)
    assert result.judge_calls == 0
    assert judge.requests == []


def test_no_answer_close_is_zero_without_judge_calls() -> None:
    judge = FakeJudge()
    result = score(choice("<think>She switched to tea.</think><answer>(b) Green tea"), judge)
    assert result.total == 0.0
    assert not result.answered
    assert (result.accuracy, result.consistency, result.format) == (0.0, 0.0, 0.0)
    assert result.judge_calls == 0
    assert judge.requests == []


def test_text_outside_tags_loses_format_but_accuracy_is_still_read() -> None:
    judge = FakeJudge(consistency=10)
    result = score(choice("Let me see. " + GOOD + " Cheers!"), judge)
    assert result.format == 0.0
    assert result.accuracy == 1.0
    assert result.total == pytest.approx(1.0)


def test_missing_think_loses_format_and_consistency() -> None:
    judge = FakeJudge()
    result = score(choice("<answer>(b) Green tea</answer>"), judge)
    assert result.format == 0.0
    assert result.accuracy == 1.0
    # Nothing supports the answer: consistency 0, and the judge is not asked.
    assert result.consistency == 0.0
    assert result.total == 0.0
    assert judge.requests == []


def test_two_answer_blocks_lose_format_and_the_last_counts() -> None:
    judge = FakeJudge(consistency=10)
    text = "<think>tea</think><answer>(a)</answer><answer>(b)</answer>"
    result = score(choice(text), judge)
    assert result.format == 0.0
    assert result.accuracy == 1.0
    assert result.total == pytest.approx(1.0)


def test_answer_naming_two_options_is_wrong() -> None:
    judge = FakeJudge()
    result = score(choice("<think>hmm</think><answer>(a) or (b)</answer>"), judge)
    assert result.accuracy == 0.0
    assert result.total == pytest.approx(0.5)
    assert judge.requests == []


def test_binary_yes_no_item() -> None:
    item = RewardItem(
        kind="choice",
        question="Does this reply fit my personality?",
        reference="b",
        choices={"a": "Yes", "b": "No"},
        completion="<think>Too chatty for her.</think><answer>(b) No</answer>",
    )
    assert score(item, FakeJudge(consistency=9)).total == pytest.approx(0.9 + 0.5)


def test_judge_fallback_counts_and_gives_0_5() -> None:
    result = score(choice(GOOD), FakeJudge(fallback=True))
    assert result.consistency == 0.5
    assert result.fallbacks == 1
    assert result.judge_calls == 1
    assert result.total == pytest.approx(0.5 * 1 + 0.5)


# -- score: open questions ------------------------------------------------------------------------


def test_open_question_accuracy_6_consistency_5() -> None:
    judge = FakeJudge(accuracy=6, consistency=5)
    text = "<think>She told me in March.</think><answer>June, in Lisbon.</answer>"
    result = score(open_item(text), judge)
    assert result.total == pytest.approx(0.6 * 0.5 + 0.5)
    assert judge.aspects() == ["accuracy", "consistency"]
    accuracy_request = judge.requests[0]
    assert accuracy_request.reference == "It is in June in Lisbon."
    assert accuracy_request.answer == "June, in Lisbon."
    assert result.judge_calls == 2


def test_open_question_accuracy_0_skips_consistency() -> None:
    judge = FakeJudge(accuracy=0)
    result = score(open_item("<think>no idea</think><answer>May</answer>"), judge)
    assert result.total == pytest.approx(0.5)
    assert judge.aspects() == ["accuracy"]


def test_open_question_both_judges_fall_back() -> None:
    result = score(open_item("<think>x</think><answer>y</answer>"), FakeJudge(fallback=True))
    assert result.fallbacks == 2
    assert result.total == pytest.approx(0.25 + 0.5)


# -- score: errors --------------------------------------------------------------------------------


def test_judge_required_when_one_is_needed() -> None:
    with pytest.raises(ConfigError, match="judge is required"):
        score(choice(GOOD), None)
    with pytest.raises(ConfigError, match="judge is required"):
        score(open_item("<think>x</think><answer>y</answer>"), None)


def test_no_judge_needed_when_nothing_would_be_asked() -> None:
    assert score(choice(GOOD, reference="a"), None).total == pytest.approx(0.5)
    assert score(choice("<think>x</think>"), None).total == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "mcq"}, "kind 'mcq' is unknown"),
        ({"choices": {}}, "has no choices"),
        ({"reference": "d"}, "'d' is not one of its choices"),
        ({"reference": "B"}, "'B' is not one of its choices"),
        ({"choices": {"A": "x", "B": "y"}, "reference": "A"}, "single lower-case letter"),
        ({"question": "  "}, "question is empty"),
        ({"kind": "open", "reference": "June"}, "open items take none"),
        ({"kind": "open", "choices": {}, "reference": ""}, "reference is empty"),
    ],
)
def test_item_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "kind": "choice",
        "question": QUESTION,
        "reference": "b",
        "choices": CHOICES,
        "completion": GOOD,
    }
    with pytest.raises(ValidationError, match=message):
        RewardItem(**(fields | kwargs))


# -- the judge's reply ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8", 8),
        ("  10\n", 10),
        ("0", 0),
        ("Score: 7", 7),
        ("7/10", 7),
        ("<think>\n\n</think>\n\n9", 9),
        ("<think>maybe 3</think> 6", 6),
        ("<think>the answer deserves a 4", None),  # cut off while thinking
        ("score: 11", None),
        ("7.5", None),
        ("-1", None),
        ("excellent", None),
        ("", None),
    ],
)
def test_parse_judge_score(reply: str, expected: int | None) -> None:
    assert parse_judge_score(reply) == expected


# -- OpenAIJudge against the scripted HTTP server -------------------------------------------------


def consistency_request() -> JudgeRequest:
    return JudgeRequest(
        aspect="consistency",
        question=QUESTION,
        reference="",
        reasoning="She switched to tea last week.",
        answer="(b) Green tea",
    )


def judge_model(server: ScriptedOpenAIServer) -> OpenAIChatModel:
    return OpenAIChatModel("judge", server.base_url, max_retries=0, sleep=lambda s: None)


def test_openai_judge_scores_a_reply() -> None:
    with ScriptedOpenAIServer(scripted("8")) as server:
        judge = OpenAIJudge(judge_model(server))
        verdict = judge.score(consistency_request())
        requests = server.requests
    assert verdict == JudgeScore(value=0.8, raw=8, fallback=False, error=None)
    assert judge.stats == JudgeStats(calls=1, attempts=1, fallbacks=0)
    [request] = requests
    assert request["temperature"] == 0.0
    assert request["max_tokens"] == 16
    [message] = request["messages"]
    assert message["role"] == "user"
    prompt = message["content"]
    assert QUESTION in prompt
    assert "She switched to tea last week." in prompt
    assert "(b) Green tea" in prompt
    assert "0 to 10" in prompt
    assert "$" not in prompt  # every placeholder filled


def test_openai_judge_accuracy_prompt_holds_the_reference() -> None:
    request = JudgeRequest(
        aspect="accuracy", question="Q?", reference="the reference", reasoning="r", answer="A"
    )
    with ScriptedOpenAIServer(scripted("3")) as server:
        judge = OpenAIJudge(judge_model(server))
        assert judge.score(request).value == pytest.approx(0.3)
        prompt = server.requests[0]["messages"][0]["content"]
    assert "the reference" in prompt
    assert prompt == judge.prompt(request)


def test_openai_judge_retries_an_unparsable_reply() -> None:
    with ScriptedOpenAIServer(scripted("score: 11", "7")) as server:
        judge = OpenAIJudge(judge_model(server))
        verdict = judge.score(consistency_request())
        assert len(server.requests) == 2
    assert verdict.value == pytest.approx(0.7)
    assert verdict.raw == 7
    assert not verdict.fallback
    assert judge.stats == JudgeStats(calls=1, attempts=2, fallbacks=0)


def test_openai_judge_falls_back_after_unparsable_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="personavlm.train.reward")
    with ScriptedOpenAIServer(scripted("great answer", "very good")) as server:
        judge = OpenAIJudge(judge_model(server))
        verdict = judge.score(consistency_request())
    assert verdict.value == 0.5
    assert verdict.fallback
    assert verdict.raw is None
    assert verdict.error is not None and "very good" in verdict.error
    assert judge.stats == JudgeStats(calls=1, attempts=2, fallbacks=1)
    [record] = [r for r in caplog.records if r.name == "personavlm.train.reward"]
    assert record.levelno == logging.WARNING
    assert "consistency" in record.getMessage()
    assert "very good" in record.getMessage()


def test_openai_judge_falls_back_after_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="personavlm.train.reward")
    failures = scripted(ScriptedResponse(status=500), ScriptedResponse(status=500))
    with ScriptedOpenAIServer(failures) as server:
        judge = OpenAIJudge(judge_model(server))
        verdict = judge.score(consistency_request())
        assert len(server.requests) == 2
    assert verdict.fallback
    assert verdict.value == 0.5
    assert verdict.error is not None and "ModelResponseError" in verdict.error
    assert judge.stats == JudgeStats(calls=1, attempts=2, fallbacks=1)
    assert any("HTTP 500" in r.getMessage() for r in caplog.records)


def test_openai_judge_in_the_reward() -> None:
    with ScriptedOpenAIServer(scripted("6", "5")) as server:
        judge = OpenAIJudge(judge_model(server))
        text = "<think>She told me in March.</think><answer>June, in Lisbon.</answer>"
        result = score(open_item(text), judge)
    assert result.total == pytest.approx(0.6 * 0.5 + 0.5)
    assert judge.stats == JudgeStats(calls=2, attempts=2, fallbacks=0)


def test_openai_judge_settings_are_checked() -> None:
    with ScriptedOpenAIServer(scripted()) as server:
        model = judge_model(server)
        with pytest.raises(ConfigError, match="attempts"):
            OpenAIJudge(model, attempts=0)
        with pytest.raises(ConfigError, match="max_tokens"):
            OpenAIJudge(model, max_tokens=0)


# -- PersonaReward as TRL calls it ----------------------------------------------------------------


class MetricRecorder:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def __call__(self, name: str, value: float) -> None:
        self.metrics[name] = value


def trl_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {key: [row[key] for row in rows] for key in ("kind", "question", "reference", "choices")}


CHOICE_ROW: dict[str, Any] = {
    "kind": "choice",
    "question": QUESTION,
    "reference": "b",
    "choices": CHOICES,
}
# HF datasets store every row's choices with the union of keys, None where a row has none.
OPEN_ROW: dict[str, Any] = {
    "kind": "open",
    "question": "What did I say about my sister's wedding?",
    "reference": "It is in June in Lisbon.",
    "choices": {"a": None, "b": None, "c": None},
}


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_persona_reward_as_trl_calls_it() -> None:
    judge = FakeJudge(accuracy=6, consistency=5)
    reward = PersonaReward(judge, max_workers=1)
    assert reward.__name__ == "persona_reward"
    recorder = MetricRecorder()
    rows = [CHOICE_ROW, CHOICE_ROW, OPEN_ROW, CHOICE_ROW]
    completions = [
        assistant(GOOD),  # 0.5 * 1 + 0.5
        assistant("<think>x</think><answer>(a)</answer>"),  # wrong: 0.5
        assistant("<think>March.</think><answer>June.</answer>"),  # 0.6 * 0.5 + 0.5
        assistant("<think>x</think><answer>(b"),  # unanswered: 0
    ]
    totals = reward(
        prompts=[[{"role": "user", "content": "q"}]] * 4,
        completions=completions,
        completion_ids=[[1, 2]] * 4,
        trainer_state=object(),
        log_extra=lambda column, values: None,
        log_metric=recorder,
        **trl_columns(rows),
    )
    assert totals == pytest.approx([1.0, 0.5, 0.8, 0.0])
    assert [b.total for b in reward.last] == totals
    assert recorder.metrics == pytest.approx(
        {
            "reward/format_rate": 3 / 4,
            "reward/answered_rate": 3 / 4,
            "reward/accuracy": (1 + 0 + 0.6 + 0) / 4,
            "reward/consistency": (0.5 + 0 + 0.5 + 0) / 4,
            "reward/judge_fallbacks": 0.0,
        }
    )


def test_persona_reward_scores_final_turn_when_present() -> None:
    reward = PersonaReward(FakeJudge(consistency=10))
    totals = reward(
        prompts=["q", "q"],
        completions=[
            "<think>first turn</think><retrieve>tea</retrieve>",
            "<think>x</think><answer>(b)</answer>",
        ],
        final_turn=["<think>tea now</think><answer>(b)</answer>", "no answer here"],
        **trl_columns([CHOICE_ROW, CHOICE_ROW]),
    )
    assert totals == pytest.approx([1.5, 0.0])


def test_persona_reward_keeps_order_with_threads() -> None:
    # The judge answers later rows faster, so threads finish out of order.
    def by_request(request: JudgeRequest) -> int:
        value = int(request.answer)
        time.sleep(0.005 * (10 - value))
        return value

    judge = FakeJudge(by_request=by_request)
    reward = PersonaReward(judge, max_workers=4)
    answers = [str(i % 11) for i in range(12)]
    completions = [f"<think>r</think><answer>{a}</answer>" for a in answers]
    totals = reward(prompts=["q"] * 12, completions=completions, **trl_columns([OPEN_ROW] * 12))
    expected = [(int(a) / 10) ** 2 + 0.5 for a in answers]
    assert totals == pytest.approx(expected)
    # An answer judged 0 skips its consistency call.
    assert len(judge.requests) == 2 * 12 - answers.count("0")


def test_persona_reward_logs_batch_fallbacks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="personavlm.train.reward")
    recorder = MetricRecorder()
    reward = PersonaReward(FakeJudge(fallback=True))
    totals = reward(
        prompts=["q", "q"],
        completions=[GOOD, GOOD],
        log_metric=recorder,
        **trl_columns([CHOICE_ROW, CHOICE_ROW]),
    )
    assert totals == pytest.approx([1.0, 1.0])
    assert recorder.metrics["reward/judge_fallbacks"] == 2.0
    assert [b.fallbacks for b in reward.last] == [1, 1]
    assert any("2 of 2 judge calls" in r.getMessage() for r in caplog.records)


def test_persona_reward_rejects_bad_batches() -> None:
    reward = PersonaReward(FakeJudge())
    columns = trl_columns([CHOICE_ROW])
    with pytest.raises(ConfigError, match="missing: choices"):
        reward(
            prompts=["q"],
            completions=[GOOD],
            **{k: v for k, v in columns.items() if k != "choices"},
        )
    with pytest.raises(ValidationError, match="'kind' has 1 values for 2 completions"):
        reward(prompts=["q", "q"], completions=[GOOD, GOOD], **columns)
    with pytest.raises(ValidationError, match=r"reward row 0: .*not one of its choices"):
        reward(prompts=["q"], completions=[GOOD], **(columns | {"reference": ["z"]}))


def test_persona_reward_needs_a_judge() -> None:
    with pytest.raises(ConfigError, match="needs a judge"):
        PersonaReward(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_workers"):
        PersonaReward(FakeJudge(), max_workers=0)


def test_completion_text_forms() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text(assistant("last")) == "last"
    conversation = [
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "retrieved"},
        {"role": "assistant", "content": [{"type": "text", "text": "final"}]},
    ]
    assert completion_text(conversation) == "final"
    with pytest.raises(ValidationError, match="assistant turn"):
        completion_text([{"role": "user", "content": "x"}])


def test_a_judge_that_fails_on_every_call_of_a_batch_stops_training() -> None:
    from personavlm.errors import ModelResponseError
    from personavlm.models.openai import OpenAIChatModel
    from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse

    good = "<think>The memory says Bobby.</think><answer>(b) Bobby</answer>"
    columns = {
        "kind": ["choice"] * 4,
        "question": ["What is my dog called?"] * 4,
        "reference": ["b"] * 4,
        "choices": [{"a": "Rex", "b": "Bobby"}] * 4,
    }
    with ScriptedOpenAIServer(lambda request: ScriptedResponse(status=404)) as server:
        judge = OpenAIJudge(OpenAIChatModel("no-such-judge", server.base_url, max_retries=0))
        reward = PersonaReward(judge, max_workers=2)
        with pytest.raises(ModelResponseError, match="failed on all 4 calls"):
            reward(prompts=[None] * 4, completions=[good] * 4, **columns)
        # Fewer calls than down_after: the paper's fallback, counted, training goes on.
        small = {key: values[:2] for key, values in columns.items()}
        assert reward(prompts=[None] * 2, completions=[good] * 2, **small) == [1.0, 1.0]
