"""The Personality Evolving Mechanism (PEM) of PersonaVLM (PAPER.md section 3).

Each turn the model reads a momentary Big Five vector p'_m in {1..5}^5 off the conversation,
and the user's long-term personality p_m is an exponential moving average of those readings:

    p_m      = lambda_m * p_{m-1} + (1 - lambda_m) * p'_m
    lambda_m = 0.7 - 0.2 * cos(pi * min(m, 50) / 50)

where m is the number of readings already absorbed. lambda rises from 0.5 (m = 0) through 0.7
(m = 25) to 0.9 (m >= 50): the estimate adapts fast while little is known and settles later.

A reading of 3 ("neutral") usually means the turn said nothing about that trait. The paper
skips an update only when all five readings are 3 (``SkipRule.PAPER``); the reference code
skips each trait read as 3 on its own (``SkipRule.REFERENCE``). Both are offered.

A schedule of m alone cannot follow a late change of personality without giving up late
stability. ``ShiftRule`` (opt-in, through ``shift_aware_update`` or ``replay(shift_rule=...)``)
updates a trait faster while its recent readings keep landing well on one side of the estimate;
docs/pem-tracking.md measures it. The paper's schedule without it stays the default everywhere.

The module also renders the state as prompt text (values to one decimal, with guidance on how
to adapt the tone) and parses the model's reading output (PAPER.md section 8) strictly: a
malformed reading raises ``ValidationError`` instead of being guessed at.
"""

from __future__ import annotations

import enum
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeAlias

from personavlm.errors import ValidationError

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

TRAITS: tuple[str, ...] = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)
NEUTRAL: float = 3.0

_LOW: float = 1.0
_HIGH: float = 5.0
_RAMP_TURNS = 50
# Longest excerpt of bad input quoted in an error message, so a runaway model output does not
# turn into a runaway exception message.
_QUOTE_LIMIT = 80

Schedule: TypeAlias = Callable[[int], float]


class SkipRule(enum.StrEnum):
    """How a reading of 3 ("nothing observed") is treated."""

    PAPER = "paper"
    REFERENCE = "reference"


def _quote(text: str) -> str:
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 3] + "..."
    return repr(text)


def _check_keys(mapping: object, what: str) -> Mapping[object, object]:
    if not isinstance(mapping, Mapping):
        raise ValidationError(
            f"{what} must be a mapping with the keys {', '.join(TRAITS)}; "
            f"got {type(mapping).__name__}"
        )
    missing = [name for name in TRAITS if name not in mapping]
    extra = sorted((repr(key) for key in mapping if key not in TRAITS), key=str)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise ValidationError(
            f"{what} needs exactly the keys {', '.join(TRAITS)}: {'; '.join(parts)}"
        )
    return mapping


def _check_trait_value(name: str, value: object) -> float:
    # bool is an int subclass, but True as a trait level is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(
            f"trait {name} must be a number in [1, 5]; got {value!r} ({type(value).__name__})"
        )
    number = float(value)
    if not math.isfinite(number) or not _LOW <= number <= _HIGH:
        raise ValidationError(f"trait {name} must be a finite number in [1, 5]; got {value!r}")
    return number


def _check_reading_value(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(
            f"reading {name} must be an integer 1..5; got {value!r} ({type(value).__name__})"
        )
    number = int(value)
    if not 1 <= number <= 5:
        raise ValidationError(f"reading {name} must be an integer 1..5; got {number}")
    return number


@dataclass(frozen=True, slots=True)
class Traits:
    """The long-term personality p_m: five floats in [1, 5], Big Five order."""

    openness: float
    conscientiousness: float
    extraversion: float
    agreeableness: float
    neuroticism: float

    def __post_init__(self) -> None:
        # Stored as float so that Traits(4, ...) and Traits(4.0, ...) compare and render alike.
        for name in TRAITS:
            object.__setattr__(self, name, _check_trait_value(name, getattr(self, name)))

    @classmethod
    def neutral(cls) -> Traits:
        return cls(NEUTRAL, NEUTRAL, NEUTRAL, NEUTRAL, NEUTRAL)

    @classmethod
    def from_mapping(cls, m: Mapping[str, float]) -> Traits:
        checked = _check_keys(m, "traits")
        return cls(*(checked[name] for name in TRAITS))  # type: ignore[arg-type]

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (
            self.openness,
            self.conscientiousness,
            self.extraversion,
            self.agreeableness,
            self.neuroticism,
        )

    def to_dict(self) -> dict[str, float]:
        return dict(zip(TRAITS, self.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True)
class Reading:
    """A momentary reading p'_m: five integers in 1..5, Big Five order."""

    openness: int
    conscientiousness: int
    extraversion: int
    agreeableness: int
    neuroticism: int

    def __post_init__(self) -> None:
        # Normalises numpy integers to int so readings hash and serialise like plain ones.
        for name in TRAITS:
            object.__setattr__(self, name, _check_reading_value(name, getattr(self, name)))

    @classmethod
    def from_mapping(cls, m: Mapping[str, int]) -> Reading:
        checked = _check_keys(m, "reading")
        return cls(*(checked[name] for name in TRAITS))  # type: ignore[arg-type]

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (
            self.openness,
            self.conscientiousness,
            self.extraversion,
            self.agreeableness,
            self.neuroticism,
        )

    def to_dict(self) -> dict[str, int]:
        return dict(zip(TRAITS, self.as_tuple(), strict=True))

    @property
    def is_neutral(self) -> bool:
        return all(value == NEUTRAL for value in self.as_tuple())


@dataclass(frozen=True, slots=True)
class PersonalityState:
    """The personality estimate and how many readings it has absorbed (m)."""

    traits: Traits
    step: int

    def __post_init__(self) -> None:
        if not isinstance(self.traits, Traits):
            raise ValidationError(
                f"PersonalityState.traits must be a Traits; got {type(self.traits).__name__}"
            )
        _check_step(self.step, "PersonalityState.step")

    @classmethod
    def initial(cls) -> PersonalityState:
        return cls(Traits.neutral(), 0)

    def to_dict(self) -> dict[str, Any]:
        return {"traits": self.traits.to_dict(), "step": self.step}


def _check_step(m: object, what: str) -> int:
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValidationError(f"{what} must be an integer >= 0; got {m!r}")
    return m


def paper_lambda(m: int) -> float:
    """lambda_m = 0.7 - 0.2 * cos(pi * min(m, 50) / 50), the paper's schedule."""
    _check_step(m, "m")
    raw = 0.7 - 0.2 * math.cos(math.pi * min(m, _RAMP_TURNS) / _RAMP_TURNS)
    # Float noise makes the formula give 0.49999999999999994 at m = 0 and 0.8999999999999999
    # at m = 50; rounding to 12 places restores the paper's exact anchors and changes nothing
    # else that matters.
    return round(raw, 12)


def _lambda_for(schedule: Schedule, m: int) -> float:
    value: object = schedule(m)
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0  # also false for NaN
    ):
        raise ValidationError(
            f"schedule returned {value!r} for m={m}; it must return a number in [0, 1]"
        )
    return float(value)


def check_skip_rule(skip_rule: object) -> SkipRule:
    """The skip rule a setting names (a SkipRule is a str); ValidationError otherwise."""
    if isinstance(skip_rule, str) and skip_rule in {rule.value for rule in SkipRule}:
        return SkipRule(skip_rule)
    choices = ", ".join(repr(rule.value) for rule in SkipRule)
    raise ValidationError(f"skip_rule must be one of {choices}; got {skip_rule!r}")


def _blend(old: float, new: int, lam: float) -> float:
    # Clamped because a custom schedule or accumulated rounding may step just outside [1, 5].
    return min(_HIGH, max(_LOW, lam * old + (1.0 - lam) * new))


def _check_inputs(state: object, reading: object) -> None:
    if not isinstance(state, PersonalityState):
        raise ValidationError(f"state must be a PersonalityState; got {type(state).__name__}")
    if not isinstance(reading, Reading):
        raise ValidationError(f"reading must be a Reading; got {type(reading).__name__}")


def _absorbed(reading: Reading, rule: SkipRule) -> list[bool] | None:
    """Which traits take the reading; None when the whole reading is skipped."""
    absorb = [rule is SkipRule.PAPER or value != NEUTRAL for value in reading.as_tuple()]
    if reading.is_neutral or not any(absorb):
        return None
    return absorb


def _absorb(
    state: PersonalityState, reading: Reading, absorb: Sequence[bool], lambdas: Sequence[float]
) -> PersonalityState:
    values = (
        _blend(old, new, lam) if take else old
        for old, new, take, lam in zip(
            state.traits.as_tuple(), reading.as_tuple(), absorb, lambdas, strict=True
        )
    )
    return PersonalityState(Traits(*values), state.step + 1)


def update(
    state: PersonalityState,
    reading: Reading,
    *,
    schedule: Schedule = paper_lambda,
    skip_rule: SkipRule = SkipRule.PAPER,
) -> PersonalityState:
    """Absorb one reading: p_m = lambda_m * p_{m-1} + (1 - lambda_m) * p'_m.

    lambda_m = schedule(state.step). With ``SkipRule.PAPER`` an all-3 reading leaves the state
    untouched; with ``SkipRule.REFERENCE`` each trait read as 3 keeps its value and the step
    advances only if some trait changed.
    """
    _check_inputs(state, reading)
    absorb = _absorbed(reading, check_skip_rule(skip_rule))
    if absorb is None:
        return state
    lam = _lambda_for(schedule, state.step)
    return _absorb(state, reading, absorb, [lam] * len(TRAITS))


@dataclass(frozen=True, slots=True)
class ShiftRule:
    """Opt-in: update a trait with lambda ``fast`` while its last ``run`` informative readings
    all lay ``margin`` levels or more on the same side of its estimate.

    Noise rarely fakes such a run (readings are whole levels; three in a row 1.5 levels off
    came up on about 0.1% of stable trait-turns in docs/pem-tracking.md), while a real shift
    of a level or more produces one within a few readings. ``fast`` never slows a
    trait down: the lambda used is min(fast, schedule(m)). The defaults were chosen on tuning
    seeds and checked on held-out ones (docs/pem-tracking.md).
    """

    run: int = 3
    margin: float = 1.5
    fast: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.run, bool) or not isinstance(self.run, int) or self.run < 1:
            raise ValidationError(f"ShiftRule.run must be an integer >= 1; got {self.run!r}")
        for name, low, high in (("margin", 0.0, 4.0), ("fast", 0.0, 1.0)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not low <= float(value) <= high  # also false for NaN
            ):
                raise ValidationError(
                    f"ShiftRule.{name} must be a number in [{low:g}, {high:g}]; got {value!r}"
                )


@dataclass(frozen=True, slots=True)
class ShiftEvidence:
    """Per trait (Big Five order), how many informative readings in a row lay at least the
    rule's margin above (+n) or below (-n) the estimate. Readings of 3 mean "not observed":
    they neither extend nor break a run."""

    runs: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    def __post_init__(self) -> None:
        runs: object = self.runs
        if (
            not isinstance(runs, tuple)
            or len(runs) != len(TRAITS)
            or any(isinstance(n, bool) or not isinstance(n, int) for n in runs)
        ):
            raise ValidationError(
                f"ShiftEvidence.runs must be a tuple of {len(TRAITS)} integers; got {runs!r}"
            )

    def observe(self, estimate: Traits, reading: Reading, margin: float) -> ShiftEvidence:
        """The runs after seeing ``reading`` against the estimate it is about to update."""
        runs = tuple(
            _next_run(count, value, old, margin)
            for count, value, old in zip(
                self.runs, reading.as_tuple(), estimate.as_tuple(), strict=True
            )
        )
        return ShiftEvidence(runs)  # type: ignore[arg-type]


def _next_run(count: int, value: int, estimate: float, margin: float) -> int:
    if value == NEUTRAL:
        return count
    if value >= estimate + margin:
        return count + 1 if count > 0 else 1
    if value <= estimate - margin:
        return count - 1 if count < 0 else -1
    return 0


def shift_aware_update(
    state: PersonalityState,
    reading: Reading,
    evidence: ShiftEvidence | None = None,
    *,
    rule: ShiftRule | None = None,
    schedule: Schedule = paper_lambda,
    skip_rule: SkipRule = SkipRule.PAPER,
) -> tuple[PersonalityState, ShiftEvidence]:
    """``update`` with a ShiftRule (default ``ShiftRule()``): returns the new state and the
    evidence to pass with the next reading (start with None: no runs yet).

    Traits without a run take lambda_m = schedule(state.step), exactly as in ``update``; the
    skip rule and the step count behave as there.
    """
    _check_inputs(state, reading)
    shift_rule = ShiftRule() if rule is None else rule
    if not isinstance(shift_rule, ShiftRule):
        raise ValidationError(f"rule must be a ShiftRule; got {type(rule).__name__}")
    seen = ShiftEvidence() if evidence is None else evidence
    if not isinstance(seen, ShiftEvidence):
        raise ValidationError(f"evidence must be a ShiftEvidence; got {type(evidence).__name__}")
    absorb = _absorbed(reading, check_skip_rule(skip_rule))
    if absorb is None:
        return state, seen  # an all-3 reading is no evidence either
    seen = seen.observe(state.traits, reading, shift_rule.margin)
    lam = _lambda_for(schedule, state.step)
    fast = min(lam, shift_rule.fast)
    lambdas = [fast if abs(count) >= shift_rule.run else lam for count in seen.runs]
    return _absorb(state, reading, absorb, lambdas), seen


def replay(
    readings: Iterable[Reading],
    *,
    start: PersonalityState | None = None,
    schedule: Schedule = paper_lambda,
    skip_rule: SkipRule = SkipRule.PAPER,
    shift_rule: ShiftRule | None = None,
) -> list[PersonalityState]:
    """The state after each reading in turn, starting from ``start`` (default: neutral, m=0).

    With ``shift_rule`` each reading goes through ``shift_aware_update`` (the runs start
    empty at ``start``); without it, through ``update``.
    """
    state = PersonalityState.initial() if start is None else start
    evidence = ShiftEvidence()
    states: list[PersonalityState] = []
    for reading in readings:
        if shift_rule is None:
            state = update(state, reading, schedule=schedule, skip_rule=skip_rule)
        else:
            state, evidence = shift_aware_update(
                state, reading, evidence, rule=shift_rule, schedule=schedule, skip_rule=skip_rule
            )
        states.append(state)
    return states


# (low, moderate, high) guidance per trait: how the assistant should adapt to the user.
_GUIDANCE: dict[str, tuple[str, str, str]] = {
    "openness": (
        "prefers the familiar; keep suggestions practical and concrete",
        "open to some novelty; mix familiar options with new ideas",
        "curious and imaginative; welcome new ideas and creative tangents",
    ),
    "conscientiousness": (
        "spontaneous and flexible; keep plans light and easy to start",
        "reasonably organised; offer structure when it helps",
        "organised and goal-driven; be precise, structured and reliable",
    ),
    "extraversion": (
        "reserved; keep replies concise and low-key",
        "between outgoing and quiet; match the user's energy",
        "outgoing and energetic; be warm, lively and conversational",
    ),
    "agreeableness": (
        "direct and sceptical; be straightforward and give reasons",
        "cooperative but candid; be friendly and honest",
        "warm and trusting; be kind, supportive and considerate",
    ),
    "neuroticism": (
        "emotionally steady; a matter-of-fact tone works well",
        "usually even-keeled; acknowledge worries when they come up",
        "prone to worry; be calm and reassuring",
    ),
}

_ONE_DECIMAL = Decimal("0.1")
_LOW_BELOW = Decimal("2.5")
_HIGH_ABOVE = Decimal("3.5")


def _one_decimal(value: float) -> Decimal:
    # Via repr so 3.45 rounds as the decimal 3.45 the user sees, not as its binary
    # approximation 3.4500000000000001776...
    return Decimal(repr(value)).quantize(_ONE_DECIMAL, rounding=ROUND_HALF_UP)


def _describe(name: str, shown: Decimal) -> str:
    # Levels come from the shown value so the number and the words never disagree.
    low, moderate, high = _GUIDANCE[name]
    if shown < _LOW_BELOW:
        return low
    if shown > _HIGH_ABOVE:
        return high
    return moderate


def render(state: PersonalityState) -> str:
    """The personality as prompt text: a header, then "Trait: 3.5 — guidance" per trait."""
    if not isinstance(state, PersonalityState):
        raise ValidationError(f"state must be a PersonalityState; got {type(state).__name__}")
    lines = ["User personality (Big Five, 1-5):"]
    for name, value in state.traits.to_dict().items():
        shown = _one_decimal(value)
        lines.append(f"{name.capitalize()}: {shown} — {_describe(name, shown)}")
    return "\n".join(lines)


# One `"trait": value` entry; quotes around the key are optional but must match.
_ENTRY = re.compile(r"""(?P<q>["']?)(?P<key>[^"':]*)(?P=q)\s*:\s*(?P<value>.*)""", re.DOTALL)
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _strip_braces(text: str) -> str:
    body = text.strip()
    opens, closes = body.startswith("{"), body.endswith("}")
    if opens != closes:
        raise ValidationError(
            f"personality reading has unbalanced braces: {_quote(body)}; "
            "give either a JSON object or bare lines"
        )
    return body[1:-1] if opens else body


def _parse_entry(entry: str) -> tuple[str, int]:
    match = _ENTRY.fullmatch(entry)
    if match is None:
        raise ValidationError(
            f'cannot read {_quote(entry)} as a `"trait": value` line of a personality reading'
        )
    key = match["key"].strip().lower()
    if key not in TRAITS:
        raise ValidationError(
            f"unknown trait {_quote(match['key'])} in {_quote(entry)}; "
            f"expected one of {', '.join(TRAITS)}"
        )
    raw = match["value"].strip()
    if _INTEGER.fullmatch(raw) is None or not 1 <= int(raw) <= 5:
        raise ValidationError(
            f"{key} must be an integer 1..5; got {_quote(raw)} in {_quote(entry)}"
        )
    return key, int(raw)


def parse_reading(text: str) -> Reading:
    """Parse the model's personality output (PAPER.md section 8) into a Reading.

    Accepts five `"trait": <1-5>` entries, one per line or as a JSON object, in any order and
    letter case, with optional trailing commas. Anything it cannot read exactly raises
    ValidationError quoting the offending part.
    """
    if not isinstance(text, str):
        raise ValidationError(f"personality reading must be text; got {type(text).__name__}")
    # Values are plain integers, so a comma can only ever separate entries.
    entries = [part.strip() for part in re.split(r"[,\n]", _strip_braces(text))]
    found: dict[str, int] = {}
    for entry in filter(None, entries):
        key, value = _parse_entry(entry)
        if key in found:
            raise ValidationError(f"trait {key} appears twice in the reading: {_quote(entry)}")
        found[key] = value
    missing = [name for name in TRAITS if name not in found]
    if missing:
        raise ValidationError(
            f"personality reading lacks {', '.join(missing)}; it needs all five traits "
            f"(got {_quote(text.strip())})"
        )
    return Reading.from_mapping(found)
