"""Training: SFT samples in the agent's own prompt formats, RL prompts, the paper's reward,
multi-turn retrieval rollouts, and TRL recipes (SFT and GRPO). A client of the library:
nothing in the core imports it. See docs/training.md."""
