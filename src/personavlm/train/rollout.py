"""Multi-turn retrieval rollouts for GRPO: the model's `<retrieve>` steps run for real.

Each rollout is the agent's response loop (PAPER.md section 4) with the policy as the
model: the policy writes `<think>` and either `<answer>` (the rollout ends) or `<retrieve>`
with keywords and a time window. The step is executed against the user's memory store with
the model's own keywords and window (the reference code ignored both), through the same
search and the same retrieved-memory message the agent uses (`agent/context.py`); memories
already shown in the rollout are not shown again, and nothing later than the question's time
is found. The memories go back as the next user turn. At most `max_retrievals` retrievals
(3: four model turns); a retrieval past that, an unreadable step, or running out of tokens
ends the rollout without an answer (reward 0). Choice questions must retrieve at least once
(PAPER.md section 8): an answer before any retrieval is sent back with a reminder.

For TRL's GRPOTrainer (`rollout_func`): the completion is every model turn and every
environment turn in order; `env_mask` is 1 on the tokens the policy wrote and 0 on the
tokens the environment inserted, so only the policy's tokens carry the loss. The extra
columns `final_turn` (the last model turn's text, which the reward reads) and `retrievals`
go to the reward functions.

Text only: TRL's rollout path feeds the prompt's pictures to the model's forward pass but has
no place for pictures that arrive later, in a retrieved memory. Retrieved pictures are
therefore written as `[picture not shown]`, and visual questions are left out of the RL
prompts by default (config `exclude_tasks`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from personavlm.agent.context import retrieval_message
from personavlm.agent.protocol import (
    AnswerAction,
    Protocol,
    RetrieveAction,
    parse_step,
    resolve_window,
)
from personavlm.errors import ProtocolError, ValidationError
from personavlm.memory.records import DEFAULT_K, MemoryType
from personavlm.memory.store import MemoryStore
from personavlm.timeutil import TimeWindow, parse_time
from personavlm.train.rl_data import RLPrompt, message_text

__all__ = ["FORCE_RETRIEVAL_NOTE", "MemoryEnvironment", "RetrievalRollout", "RolloutState"]

FORCE_RETRIEVAL_NOTE = (
    "Search the user's memories before answering: reply with <think> and a <retrieve> step."
)
_RETRIEVED = (MemoryType.SEMANTIC, MemoryType.EPISODIC, MemoryType.PROCEDURAL)


class MemoryEnvironment:
    """Runs retrieve steps against `store` the way the agent does."""

    def __init__(self, store: MemoryStore, k: Mapping[str, int] | None = None) -> None:
        self.store = store
        self.k = dict(k) if k is not None else {t.value: DEFAULT_K[t] for t in _RETRIEVED}

    def retrieve(
        self,
        user: str,
        action: RetrieveAction,
        *,
        asked_at: datetime,
        seen: set[int],
        retrievals_left: int,
    ) -> str:
        """The retrieved-memory turn (text) for `action`; `seen` gains what it shows."""
        resolved = resolve_window(action.start_time, action.end_time)
        notes = list(resolved.notes)
        start, end = resolved.window.start, resolved.window.end
        if end is None or end > asked_at:
            end = asked_at  # the question's time: later memories did not exist yet
        if start is not None and start > end:
            notes.append("start_time is after the question's time; searched without it")
            start = None
        hits = self.store.search(
            user, action.keywords, types=list(self.k), k=self.k,
            window=TimeWindow(start, end), exclude_ids=seen,
        )  # fmt: skip
        seen.update(hit.memory.id for hit in hits)
        return message_text(retrieval_message(hits, notes, retrievals_left, self.store.blobs))


@dataclass
class RolloutState:
    """One rollout in progress."""

    prompt: RLPrompt
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    retrievals: int = 0
    model_turns: int = 0
    final_turn: str = ""
    ended: str | None = None  # why it ended: answer, protocol, retrieval_limit, length

    @property
    def used(self) -> int:
        return len(self.completion_ids)


class RetrievalRollout:
    """`rollout_func(prompts, trainer)` for TRL's GRPOTrainer.

    `prompts` are the dataset's prompt message lists (TRL repeats each one per generation);
    the rollout finds each prompt's RLPrompt by its content, so the dataset must hold each
    prompt once (`index` checks it)."""

    def __init__(
        self,
        environment: MemoryEnvironment,
        prompts: Sequence[RLPrompt],
        *,
        max_retrievals: int = 3,
        max_turn_tokens: int = 512,
        force_retrieval: Sequence[str] = ("choice",),
    ) -> None:
        if not 0 <= max_retrievals <= 10:
            raise ValidationError(f"max_retrievals must be in 0..10, got {max_retrievals}")
        if max_turn_tokens < 1:
            raise ValidationError(f"max_turn_tokens must be >= 1, got {max_turn_tokens}")
        self.environment = environment
        self.max_retrievals = max_retrievals
        self.max_turn_tokens = max_turn_tokens
        self.force_retrieval = frozenset(force_retrieval)
        self.index = _index(prompts)
        self.last: list[RolloutState] = []  # the latest batch, for logs and tests

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        states = [self._start(p, trainer.processing_class) for p in prompts]
        budget = int(trainer.max_completion_length)
        active = list(states)
        while active:
            replies = _generate(trainer, active, self._turn_budget(active, budget))
            active = [
                s
                for s, r in zip(active, replies, strict=True)
                if self._advance(s, r, trainer, budget)
            ]
        self.last = states
        return {
            "prompt_ids": [s.prompt_ids for s in states],
            "completion_ids": [s.completion_ids for s in states],
            "logprobs": None,  # only vLLM importance sampling reads them
            "env_mask": [s.env_mask for s in states],
            "final_turn": [s.final_turn for s in states],
            "retrievals": [s.retrievals for s in states],
            "ended": [s.ended or "" for s in states],
        }

    # ------------------------------------------------------------------ steps

    def _start(self, prompt_messages: Any, tokenizer: Any) -> RolloutState:
        key = _key(prompt_messages)
        if key not in self.index:
            raise ValidationError("a GRPO prompt is not among the RL prompts the rollout knows")
        prompt = self.index[key]
        messages = [dict(m) for m in prompt.prompt]
        text = _template(tokenizer, messages, generation=True)
        ids = _tokens(tokenizer, text)
        return RolloutState(prompt, ids, messages=messages)

    def _turn_budget(self, active: Sequence[RolloutState], budget: int) -> int:
        return max(1, min(self.max_turn_tokens, max(budget - s.used for s in active)))

    def _advance(self, state: RolloutState, reply: list[int], trainer: Any, budget: int) -> bool:
        """Adds the policy's turn and, when the rollout goes on, the environment's reply.
        Returns whether the rollout needs another model turn."""
        reply = reply[: max(0, budget - state.used)]
        state.completion_ids += reply
        state.env_mask += [1] * len(reply)
        state.model_turns += 1
        text = _decode(trainer.processing_class, reply)
        state.final_turn = text
        if state.used >= budget and not (reply and reply[-1] in set(trainer.eos_token_ids)):
            state.ended = "length"  # cut off mid-turn: the budget ended it, not the protocol
            return False
        note = self._environment_turn(state, text)
        if note is None:
            return False
        env_ids = _environment_ids(trainer, state, reply, text, note)
        if state.used + len(env_ids) >= budget:
            state.ended = "length"
            return False
        state.completion_ids += env_ids
        state.env_mask += [0] * len(env_ids)
        state.messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": note},
        ]
        return True

    def _environment_turn(self, state: RolloutState, text: str) -> str | None:
        """What the environment says back, or None when the rollout ends here."""
        try:
            action = parse_step(text, Protocol.TAGS)
        except ProtocolError:
            state.ended = "protocol"
            return None
        if isinstance(action, AnswerAction):
            must = state.prompt.kind in self.force_retrieval and state.retrievals == 0
            if must and self.max_retrievals > 0 and state.model_turns <= self.max_retrievals:
                return FORCE_RETRIEVAL_NOTE
            state.ended = "answer"
            return None
        if state.retrievals >= self.max_retrievals:
            state.ended = "retrieval_limit"
            return None
        state.retrievals += 1
        return self.environment.retrieve(
            state.prompt.user,
            action,
            asked_at=parse_time(state.prompt.time),
            seen=state.seen,
            retrievals_left=self.max_retrievals - state.retrievals,
        )


def _key(messages: Any) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)


def _index(prompts: Sequence[RLPrompt]) -> dict[str, RLPrompt]:
    index: dict[str, RLPrompt] = {}
    for prompt in prompts:
        key = _key(prompt.prompt)
        if key in index and index[key].id != prompt.id:
            raise ValidationError(
                f"RL prompts {index[key].id!r} and {prompt.id!r} have the same messages; "
                "a rollout could not tell them apart"
            )
        index[key] = prompt
    return index


def _template(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, generation: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation
    )
    return str(text)


def _tokens(tokenizer: Any, text: str) -> list[int]:
    target = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    return list(target(text, add_special_tokens=False)["input_ids"])


def _decode(tokenizer: Any, ids: Sequence[int], *, special: bool = False) -> str:
    target = getattr(tokenizer, "tokenizer", tokenizer)
    return str(target.decode(list(ids), skip_special_tokens=not special))


def _environment_ids(
    trainer: Any, state: RolloutState, reply: Sequence[int], text: str, note: str
) -> list[int]:
    """The tokens between the policy's turn and its next one: the end of its turn as the
    chat template writes it, the environment's user turn and the next assistant header.
    Found as the difference of two renderings, so any prefix-preserving template works."""
    tokenizer = trainer.processing_class
    before = _template(tokenizer, state.messages, generation=True)
    turn = [{"role": "assistant", "content": text}, {"role": "user", "content": note}]
    after = _template(tokenizer, [*state.messages, *turn], generation=True)
    if not after.startswith(before + text):
        raise ValidationError(
            "the chat template does not render a conversation as a prefix of its continuation; "
            "multi-turn rollouts need a prefix-preserving template (Qwen's is)"
        )
    rest = after[len(before) + len(text) :]
    if reply and reply[-1] in set(trainer.eos_token_ids):
        # The policy's own end-of-turn token is already in the completion.
        written = _decode(tokenizer, reply[-1:], special=True)
        rest = rest.removeprefix(written)
    return _tokens(tokenizer, rest)


def _generate(trainer: Any, states: Sequence[RolloutState], max_new_tokens: int) -> list[list[int]]:
    """One model turn for every active rollout, as one left-padded batch, with the
    trainer's sampling settings (temperature, top_p, top_k...)."""
    import torch
    from trl.models import unwrap_model_for_generation

    tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    pad = int(tokenizer.pad_token_id)
    rows = [s.prompt_ids + s.completion_ids for s in states]
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    device = trainer.accelerator.device
    config = copy.deepcopy(trainer.generation_config)  # the trainer's sampling settings
    config.max_new_tokens = max_new_tokens
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            generation_kwargs=trainer.generation_kwargs,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model,
        torch.no_grad(),
    ):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=config,
        )
    stops = set(trainer.eos_token_ids)
    replies = []
    for row in output[:, width:].cpu().tolist():
        reply = []
        for token in row:
            reply.append(int(token))
            if token in stops:
                break
        while reply and reply[-1] == pad and pad not in stops:
            reply.pop()
        replies.append(reply)
    return replies
