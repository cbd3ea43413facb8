"""GRPO on TRL's GRPOTrainer: `personavlm train grpo --config FILE`.

    judge = OpenAIJudge(models.load("openai:Qwen/Qwen3-30B-A3B@http://judge:8000/v1"))
    result = run_grpo(load_recipe(Path("recipes/grpo_qwen25vl_7b.toml"), kind="grpo"), judge)

The RL prompts of a training-data folder (`rl_data.py`) are rolled out with real retrieval
against the folder's memory store (`rollout.py`) and scored with the paper's reward
(`reward.py`: r = f_acc * f_cons + 0.5 * f_format, the judge behind `Judge`). Defaults are
the paper's (config.GRPO_DEFAULTS: group 6, lr 2e-6, beta 0.01, temperature 1.0). Besides
TRL's own metrics the log has `reward/format_rate`, `reward/accuracy`,
`reward/judge_fallbacks`, `rollout/retrievals` and `rollout/ended_<why>`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from personavlm import embed
from personavlm.errors import ConfigError, ValidationError
from personavlm.memory.store import MemoryStore
from personavlm.train.config import Recipe
from personavlm.train.modeling import load_for_training, lora_config
from personavlm.train.reward import Judge, PersonaReward
from personavlm.train.rl_data import RLData, RLPrompt, load_rl_prompts
from personavlm.train.rollout import MemoryEnvironment, RetrievalRollout
from personavlm.train.sft import TrainResult, finish_run

__all__ = ["RolloutMetrics", "grpo_dataset", "run_grpo", "select_prompts"]


def select_prompts(data: RLData, recipe: Recipe) -> list[RLPrompt]:
    excluded = set(recipe.data.exclude_tasks)
    prompts = [p for p in data.prompts if p.task not in excluded]
    if recipe.data.limit is not None:
        prompts = prompts[: recipe.data.limit]
    if not prompts:
        raise ValidationError(
            f"no RL prompts left after excluding {sorted(excluded)}; check [data] exclude_tasks"
        )
    return prompts


def grpo_dataset(prompts: list[RLPrompt]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [dict(m) for m in p.prompt],
                "id": p.id,
                "kind": p.kind,
                "question": p.question,
                "reference": p.reference,
                "choices": dict(p.choices),
            }
            for p in prompts
        ]
    )


class RolloutMetrics:
    """A reward function that scores nothing (weight 0) and logs what the rollouts did:
    mean retrievals and why rollouts ended. TRL hands the rollout's extra columns to
    reward functions, and this is where they reach the log."""

    __name__ = "rollout_metrics"

    def __call__(
        self,
        prompts: Any = None,
        completions: Any = None,
        *,
        retrievals: list[int] | None = None,
        ended: list[str] | None = None,
        log_metric: Any = None,
        **_: Any,
    ) -> list[float]:
        count = len(retrievals or ended or completions or [])
        if log_metric is not None and retrievals:
            log_metric("rollout/retrievals", sum(retrievals) / len(retrievals))
        if log_metric is not None and ended:
            reasons = Counter(ended)
            for why in ("answer", "protocol", "retrieval_limit", "length"):
                log_metric(f"rollout/ended_{why}", reasons[why] / len(ended))
        return [0.0] * count


def run_grpo(recipe: Recipe, judge: Judge) -> TrainResult:
    if recipe.kind != "grpo":
        raise ConfigError(f"run_grpo needs a grpo recipe, got {recipe.kind}")
    data = load_rl_prompts(Path(recipe.data.path))
    prompts = select_prompts(data, recipe)
    loaded = load_for_training(recipe.model)
    encoder = embed.load(str(data.manifest.get("embedder", "minilm")))
    reward = PersonaReward(judge, max_workers=recipe.judge.max_workers if recipe.judge else 8)
    with MemoryStore.open(data.store, embedder=encoder, create=False) as store:
        rollout = RetrievalRollout(
            MemoryEnvironment(store),
            prompts,
            max_retrievals=recipe.rollout.max_retrievals,
            max_turn_tokens=recipe.rollout.max_turn_tokens,
            force_retrieval=recipe.rollout.force_retrieval,
        )
        trainer = _trainer(recipe, loaded, grpo_dataset(prompts), reward, rollout)
        trainer.train()
        return finish_run(trainer, loaded, recipe, title="GRPO")


def _trainer(recipe: Recipe, loaded: Any, dataset: Any, reward: Any, rollout: Any) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is ours on purpose
    args = GRPOConfig(**{"reward_weights": [1.0, 0.0], **recipe.train})
    try:
        return GRPOTrainer(
            model=loaded.model,
            reward_funcs=[reward, RolloutMetrics()],
            args=args,
            train_dataset=dataset,
            processing_class=loaded.processor,
            peft_config=lora_config(recipe.lora) if recipe.lora else None,
            rollout_func=rollout,
        )
    except ValueError as exc:
        raise ConfigError(f"TRL refused the GRPO set-up: {exc}") from exc
