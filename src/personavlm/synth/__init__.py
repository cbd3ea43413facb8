"""The persona simulator behind `personavlm synth`: seeded simulated users living for weeks
to three months, their Persona-MME histories (with pictures), ground truth, and questions.

    from personavlm.synth import synthesize
    summary = synthesize("out/synth", users=3, size="32k", seed=7)

Or one user in memory: `build_user(seed=7, user_id="u000", size="32k")`.

Files (one job each):
    core.py          beats, slots, question drafts, the task table
    vocab.py         names, places, jobs, pets
    world.py         the cast (profile, people) and the Big Five trajectory
    schedule.py      sessions and turn times
    pictures.py      scene and pet pictures with known content (Pillow)
    style.py         how the current traits show in the user's wording
    memory.py  intent.py  preference.py  interests.py  behavior.py  relationship.py
    growth.py        the aspects: each plans its beats and builds its questions
    filler.py        small talk
    dialogue.py      placing beats and rendering the history
    alignment.py     personality alignment pairs
    questions.py     drafts -> multiple-choice records (letters, times, evidence)
    paraphrase.py    optional rewording by a chat model, facts checked
    export.py        the JSON files; build.py: synthesize()

Only the CLI and training import this package; the core library never does. Pillow is needed
to draw the pictures (`pip install 'personavlm[bench]'`) and is imported only when drawing.
"""

from personavlm.synth.build import MANIFEST_FORMAT, Summary, synthesize
from personavlm.synth.core import ALIGNMENT_TASK, TASKS
from personavlm.synth.generate import SIZES, User, build_user
from personavlm.synth.paraphrase import Paraphraser, ParaphraseStats

__all__ = [
    "ALIGNMENT_TASK",
    "MANIFEST_FORMAT",
    "SIZES",
    "TASKS",
    "ParaphraseStats",
    "Paraphraser",
    "Summary",
    "User",
    "build_user",
    "synthesize",
]
