"""The Persona-MME task vocabulary (PAPER.md section 6): 14 tasks in 7 aspects.

A foundation module, not part of bench/: the simulator (synth/) writes questions under these
task names and the harness (bench/) scores them per aspect. The two are siblings and import
nothing of each other, so the table they must agree on lives below both.
"""

from __future__ import annotations

__all__ = ["ALIGNMENT_TASK", "ASPECTS", "TASK_ASPECT"]

# In the paper's order; reports list tasks and aspects this way.
TASK_ASPECT: dict[str, str] = {
    "Visual Detail Recall": "Memory",
    "Semantic Information Recall": "Memory",
    "Explicit Intent Inference": "Intent",
    "Implicit Intent Recognition": "Intent",
    "Latest Preference Recognition": "Preference",
    "Interest Evolution Analysis": "Preference",
    "Implicit Preference Recommendation": "Preference",
    "Behavioral Pattern Recognition": "Behavior",
    "Long-term Goal Tracking": "Behavior",
    "Relationship Recognition": "Relationship",
    "Relationship Dynamics Comprehension": "Relationship",
    "Tiered Explanation Delivery": "Growth",
    "Generalizing to New Scenarios": "Growth",
    "Personality Alignment": "Alignment",
}
ASPECTS: tuple[str, ...] = tuple(dict.fromkeys(TASK_ASPECT.values()))
# Asked as yes/no pairs rather than multiple choice: the simulator and the scorer treat it apart.
ALIGNMENT_TASK = "Personality Alignment"
