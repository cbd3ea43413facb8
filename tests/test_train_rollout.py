"""Multi-turn retrieval rollouts against a real store, alone and inside TRL's GRPOTrainer.

The policy is a tiny random Qwen2 whose `generate` is scripted (the tokens of a chosen
reply), so what the rollout does with a retrieve step is deterministic; GRPO then trains
the real model on those tokens (its log-probabilities, the loss and the update are real).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from personavlm.errors import ValidationError
from personavlm.memory import MemoryStore
from personavlm.train.rl_data import RLPrompt
from personavlm.train.rollout import FORCE_RETRIEVAL_NOTE, MemoryEnvironment, RetrievalRollout
from personavlm.train.tiny import build_tiny_checkpoint

USER = "ana"
ASKED = "2024-05-10 09:00:00"
RETRIEVE = (
    '<think>I should look up the dog.</think>\n<retrieve>\n"keywords": dog name\n'
    '"start_time": "2024-01-01 00:00"\n"end_time": null\n</retrieve>'
)
RIGHT = "<think>The memory says Bobby.</think><answer>(b) Bobby</answer>"
WRONG = "<think>I guess.</think><answer>(a) Rex</answer>"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [RETRIEVE, RIGHT, WRONG, FORCE_RETRIEVAL_NOTE, "Retrieved memory dog Bobby Max"] * 20
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), texts=texts, hidden=32, layers=1)


@pytest.fixture
def memories(store: MemoryStore) -> MemoryStore:
    store.add(USER, "semantic", "Ana's dog is called Bobby.", time="2024-03-01 10:00")
    store.add(USER, "semantic", "Ana's old dog was called Rex.", time="2023-06-01 10:00")
    # After the question's time: a rollout asked on May 10 must not see it.
    store.add(USER, "semantic", "Ana renamed her dog Max.", time="2024-06-01 10:00")
    return store


def question(kind: str = "choice") -> RLPrompt:
    return RLPrompt(
        id="q1",
        user=USER,
        time=ASKED,
        task="Semantic Information Recall",
        kind=kind,
        question="What is my dog called?",
        reference="b" if kind == "choice" else "Bobby",
        choices={"a": "Rex", "b": "Bobby"} if kind == "choice" else {},
        prompt=(
            {"role": "system", "content": "Answer with think and answer tags."},
            {"role": "user", "content": "What is my dog called? (a) Rex (b) Bobby"},
        ),
    )


class ScriptedPolicy:
    """`generate` that appends the tokens of a scripted reply: `script(row_index, turn)`
    picks the reply, where turn counts the assistant turns already in the row."""

    def __init__(self, tokenizer: Any, script: Any) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self.calls = 0

    def __call__(self, *, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
        import torch

        rows = []
        for index, row in enumerate(input_ids.tolist()):
            text = self.tokenizer.decode(row)
            turn = len(re.findall(r"<\|im_start\|>assistant", text)) - 1
            reply = self.tokenizer(self.script(index, turn), add_special_tokens=False)["input_ids"]
            rows.append(row + reply + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")])
        self.calls += 1
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def fake_trainer(checkpoint: Path, script: Any, budget: int = 400) -> Any:
    """What the rollout reads from a GRPOTrainer, around a real model and accelerator."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    model.generate = ScriptedPolicy(tokenizer, script)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return SimpleNamespace(
        processing_class=tokenizer,
        model_wrapped=model,
        accelerator=Accelerator(cpu=True),
        args=SimpleNamespace(ds3_gather_for_generation=True, gradient_checkpointing_kwargs=None),
        generation_kwargs={},
        generation_config=GenerationConfig(do_sample=True, eos_token_id=eos),
        eos_token_ids=eos,
        max_completion_length=budget,
    )


def run(trainer: Any, memories: MemoryStore, prompt: RLPrompt, n: int = 2, **options: Any) -> Any:
    rollout = RetrievalRollout(MemoryEnvironment(memories), [prompt], **options)
    messages = [dict(m) for m in prompt.prompt]
    return rollout, rollout([messages] * n, trainer)


def test_a_retrieve_step_searches_the_store_with_the_models_keywords_and_window(
    checkpoint: Path, memories: MemoryStore
) -> None:
    trainer = fake_trainer(checkpoint, lambda row, turn: RETRIEVE if turn == 0 else RIGHT)
    rollout, out = run(trainer, memories, question())
    tokenizer = trainer.processing_class
    for state, ids, mask in zip(rollout.last, out["completion_ids"], out["env_mask"], strict=True):
        assert (state.retrievals, state.model_turns, state.ended) == (1, 2, "answer")
        assert len(ids) == len(mask)
        inserted = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        assert "Bobby" in inserted  # the memory in the window, found by the model's keywords
        assert "Rex" not in inserted  # before start_time 2024-01-01: outside the window
        assert "Max" not in inserted  # after the question's time: did not exist yet
        written = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 1])
        assert "Bobby" not in written.split("The memory says")[0]
    assert out["final_turn"] == [RIGHT, RIGHT]
    assert out["retrievals"] == [1, 1]


def test_the_completion_is_the_chat_template_of_the_whole_conversation(
    checkpoint: Path, memories: MemoryStore
) -> None:
    trainer = fake_trainer(checkpoint, lambda row, turn: RETRIEVE if turn == 0 else RIGHT)
    rollout, out = run(trainer, memories, question(), n=1)
    tokenizer = trainer.processing_class
    state = rollout.last[0]
    conversation = [*state.messages, {"role": "assistant", "content": RIGHT}]
    expected = tokenizer.apply_chat_template(conversation, tokenize=False)
    got = tokenizer.decode(out["prompt_ids"][0] + out["completion_ids"][0])
    assert expected.rstrip("\n") == got


def test_choice_questions_must_retrieve_before_answering(
    checkpoint: Path, memories: MemoryStore
) -> None:
    replies = [RIGHT, RETRIEVE, RIGHT]
    trainer = fake_trainer(checkpoint, lambda row, turn: replies[turn])
    rollout, _ = run(trainer, memories, question(), n=1)
    state = rollout.last[0]
    assert (state.model_turns, state.retrievals, state.ended) == (3, 1, "answer")
    assert state.messages[3]["content"] == FORCE_RETRIEVAL_NOTE
    # Open questions are not forced.
    rollout, _ = run(trainer, memories, question("open"), n=1)
    assert (rollout.last[0].model_turns, rollout.last[0].retrievals) == (1, 0)


def test_rollouts_end_at_the_retrieval_limit_on_a_protocol_error_and_out_of_tokens(
    checkpoint: Path, memories: MemoryStore
) -> None:
    always = fake_trainer(checkpoint, lambda row, turn: RETRIEVE, budget=2000)
    rollout, out = run(always, memories, question(), n=1, max_retrievals=2)
    assert (rollout.last[0].retrievals, rollout.last[0].ended) == (2, "retrieval_limit")
    assert out["final_turn"] == [RETRIEVE]  # no </answer>: the reward gives 0

    broken = fake_trainer(checkpoint, lambda row, turn: "no tags at all")
    rollout, _ = run(broken, memories, question(), n=1)
    assert (rollout.last[0].model_turns, rollout.last[0].ended) == (1, "protocol")

    short = fake_trainer(checkpoint, lambda row, turn: RETRIEVE, budget=60)
    rollout, out = run(short, memories, question(), n=1)
    assert rollout.last[0].ended == "length"
    assert len(out["completion_ids"][0]) <= 60


def test_each_rollout_keeps_its_own_seen_memories(checkpoint: Path, memories: MemoryStore) -> None:
    # Two retrievals with the same words: the second shows nothing the first showed.
    replies = [RETRIEVE, RETRIEVE, RIGHT]
    trainer = fake_trainer(checkpoint, lambda row, turn: replies[turn])
    _, out = run(trainer, memories, question(), n=2)
    tokenizer = trainer.processing_class
    for ids, mask in zip(out["completion_ids"], out["env_mask"], strict=True):
        inserted = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        assert inserted.count("Bobby") == 1


def test_a_prompt_the_rollout_does_not_know_is_an_error(
    checkpoint: Path, memories: MemoryStore
) -> None:
    trainer = fake_trainer(checkpoint, lambda row, turn: RIGHT)
    rollout = RetrievalRollout(MemoryEnvironment(memories), [question()])
    with pytest.raises(ValidationError, match="not among the RL prompts"):
        rollout([[{"role": "user", "content": "something else"}]], trainer)
    duplicate = RLPrompt(
        **{**{f: getattr(question(), f) for f in question().__slots__}, "id": "q2"}
    )
    with pytest.raises(ValidationError, match="same messages"):
        RetrievalRollout(MemoryEnvironment(memories), [question(), duplicate])


@pytest.fixture(scope="module")
def vl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [RETRIEVE, RIGHT, WRONG, FORCE_RETRIEVAL_NOTE, "Retrieved memory dog Bobby Max"] * 20
    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny-vl"), texts=texts, vision=True, hidden=64, layers=1
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qwen2", "qwen2.5-vl"])
def test_grpo_steps_train_on_rollouts_that_hit_the_store(
    kind: str, checkpoint: Path, vl_checkpoint: Path, memories: MemoryStore, tmp_path: Path
) -> None:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from personavlm.models.openai import OpenAIChatModel
    from personavlm.testing import ScriptedOpenAIServer
    from personavlm.train.config import ModelSection
    from personavlm.train.grpo import RolloutMetrics, grpo_dataset
    from personavlm.train.modeling import load_for_training
    from personavlm.train.reward import OpenAIJudge, PersonaReward

    path = checkpoint if kind == "qwen2" else vl_checkpoint
    loaded = load_for_training(ModelSection(str(path), dtype="float32"))
    assert loaded.is_vlm == (kind != "qwen2")
    model, processor = loaded.model, loaded.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    # Half of each group answers right, half wrong: the advantages differ, the loss moves.
    model.generate = ScriptedPolicy(
        tokenizer, lambda row, turn: RETRIEVE if turn == 0 else (RIGHT if row % 2 else WRONG)
    )
    before = [p.detach().clone() for p in model.parameters()]
    prompt = question()
    rollout = RetrievalRollout(MemoryEnvironment(memories), [prompt])
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, max_steps=2,
        per_device_train_batch_size=6, num_generations=6, max_completion_length=400,
        learning_rate=1e-2, beta=0.01, logging_steps=1, save_strategy="no", report_to=[],
        reward_weights=[1.0, 0.0], gradient_checkpointing=False,
    )  # fmt: skip
    with ScriptedOpenAIServer(lambda request: "8") as server:
        judge = OpenAIJudge(OpenAIChatModel("judge", server.base_url, max_retries=0))
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[PersonaReward(judge), RolloutMetrics()],
            args=args,
            train_dataset=grpo_dataset([prompt] * 4),
            processing_class=processor,
            rollout_func=rollout,
        )
        trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2
    for log in logs:
        assert log["rollout/retrievals"] == 1.0
        assert log["reward/format_rate"] == 1.0
        # right: 1 * 0.8 + 0.5, wrong: 0 + 0.5 (no consistency call); half and half
        assert log["reward"] == pytest.approx((1.3 + 0.5) / 2)
    inserted = [
        tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        for ids, mask in zip(
            [s.completion_ids for s in rollout.last],
            [s.env_mask for s in rollout.last],
            strict=True,
        )
    ]
    assert all("Bobby" in text and "Max" not in text for text in inserted)
    after = list(model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
