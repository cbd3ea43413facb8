"""The user's evolving Big Five personality (the paper's PEM); see :mod:`.pem`."""

from personavlm.personality.pem import (
    NEUTRAL,
    TRAITS,
    PersonalityState,
    Reading,
    Schedule,
    ShiftEvidence,
    ShiftRule,
    SkipRule,
    Traits,
    check_skip_rule,
    paper_lambda,
    parse_reading,
    render,
    replay,
    shift_aware_update,
    update,
)

__all__ = [
    "NEUTRAL",
    "TRAITS",
    "PersonalityState",
    "Reading",
    "Schedule",
    "ShiftEvidence",
    "ShiftRule",
    "SkipRule",
    "Traits",
    "check_skip_rule",
    "paper_lambda",
    "parse_reading",
    "render",
    "replay",
    "shift_aware_update",
    "update",
]
