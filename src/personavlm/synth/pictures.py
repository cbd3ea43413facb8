"""Pictures with known content, drawn with Pillow: object scenes and pet portraits.

A `Scene` is a setting ("my desk") with three groups of objects (kind, colour, count) on the
left, in the centre and on the right, in front of a coloured wall; a `Pet` is a simple
cat/dog/rabbit figure whose fur colour and marking are said nowhere in the text. Both record
where they drew what (`boxes`, `probes`), so a test can read the answer back from the pixels.

    scene = random_scene(rng, setting="desk")
    png = draw(scene)          # deterministic bytes: same spec, same PNG
    scene.caption()            # "A photo of a desk: one red ball on the left, ..."

Drawing uses no anti-aliasing, so the pixel at a box's centre is exactly the palette colour.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from personavlm.errors import MissingDependencyError
from personavlm.synth.core import pick, sample

if TYPE_CHECKING:
    from PIL import ImageDraw

__all__ = [
    "BACKGROUNDS",
    "FUR_COLOURS",
    "HEIGHT",
    "MARKINGS",
    "MARK_RGB",
    "OBJECT_COLOURS",
    "OBJECT_KINDS",
    "POSITIONS",
    "WIDTH",
    "Pet",
    "Picture",
    "Scene",
    "Thing",
    "draw",
    "marking_text",
    "random_pet",
    "random_scene",
]

WIDTH, HEIGHT = 384, 288
POSITIONS = ("left", "centre", "right")
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (255, 127, 14),
    "yellow": (240, 200, 30),
    "green": (44, 160, 44),
    "blue": (31, 119, 180),
    "purple": (148, 103, 189),
    "pink": (227, 119, 194),
    "black": (25, 25, 25),
    "white": (252, 252, 252),
    "teal": (23, 190, 207),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "cream": (245, 238, 220),
    "pale blue": (205, 225, 245),
    "mint green": (210, 240, 220),
    "lavender": (228, 218, 245),
    "peach": (250, 220, 200),
    "light grey": (222, 222, 222),
}
FUR_COLOURS: dict[str, tuple[int, int, int]] = {
    "ginger": (214, 120, 44),
    "black": (35, 35, 35),
    "white": (246, 246, 246),
    "grey": (135, 135, 140),
    "brown": (110, 72, 44),
    "cream": (236, 218, 176),
}
MARKINGS = ("chest", "paws", "stripes", "none")
MARK_RGB = {"white": (255, 255, 255), "black": (12, 12, 12)}
OBJECT_KINDS = ("ball", "box", "book", "cone", "mug", "plate")
_PLURALS = {"box": "boxes"}
_NUMBERS = ("zero", "one", "two", "three", "four", "five")
_TABLE = (150, 111, 80)
_OUTLINE = (45, 45, 45)
_TABLE_TOP = 214
_COLUMN = WIDTH // len(POSITIONS)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive, as Pillow draws them)


@dataclass(frozen=True, slots=True)
class Thing:
    """A group of identical objects at one position; `boxes` are where each copy was drawn."""

    kind: str
    colour: str
    count: int
    position: str
    boxes: tuple[Box, ...]

    def phrase(self) -> str:
        noun = self.kind if self.count == 1 else _PLURALS.get(self.kind, self.kind + "s")
        return f"{_NUMBERS[self.count]} {self.colour} {noun}"


@dataclass(frozen=True, slots=True)
class Scene:
    setting: str
    background: str
    things: tuple[Thing, ...]

    def caption(self) -> str:
        where = {"left": "on the left", "centre": "in the middle", "right": "on the right"}
        parts = ", ".join(f"{t.phrase()} {where[t.position]}" for t in self.things)
        return f"A photo of a {self.setting}: {parts}, in front of a {self.background} wall."

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "scene",
            "setting": self.setting,
            "background": self.background,
            "objects": [
                {
                    "kind": t.kind,
                    "colour": t.colour,
                    "rgb": list(OBJECT_COLOURS[t.colour]),
                    "count": t.count,
                    "position": t.position,
                    "boxes": [list(b) for b in t.boxes],
                }
                for t in self.things
            ],
            "background_rgb": list(BACKGROUNDS[self.background]),
            "background_probe": [WIDTH // 2, 12],
        }


@dataclass(frozen=True, slots=True)
class Pet:
    species: str
    name: str
    fur: str
    marking: str  # one of MARKINGS

    @property
    def mark_colour(self) -> str:
        """Markings contrast with the fur: black on light fur, white otherwise."""
        return "black" if self.fur in ("white", "cream") else "white"

    def caption(self) -> str:
        return f"A photo of a {self.fur} {self.species} with {marking_text(self, self.marking)}."

    def probes(self) -> dict[str, list[tuple[int, int]]]:
        """Pixels that show the fur and (unless none) the marking."""
        marks = {
            "chest": [(177, 180)],
            "paws": [(172, 234), (282, 234)],
            "stripes": [(245, 150), (220, 150)],
            "none": [],
        }
        return {"fur": [(240, 195)], "marking": marks[self.marking]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "pet",
            "species": self.species,
            "name": self.name,
            "fur": self.fur,
            "fur_rgb": list(FUR_COLOURS[self.fur]),
            "marking": self.marking,
            "marking_colour": self.mark_colour,
            "marking_rgb": list(MARK_RGB[self.mark_colour]),
            "probes": {k: [list(p) for p in v] for k, v in self.probes().items()},
        }


Picture = Scene | Pet


def marking_text(pet: Pet, marking: str) -> str:
    """How a marking is described, in the colour it would have on this pet."""
    colour = pet.mark_colour
    return {
        "chest": f"a {colour} patch on its chest",
        "paws": f"{colour} paws",
        "stripes": f"{colour} stripes across its back",
        "none": "no markings at all",
    }[marking]


def random_scene(rng: random.Random, *, setting: str) -> Scene:
    kinds = sample(rng, OBJECT_KINDS, len(POSITIONS))
    colours = sample(rng, tuple(OBJECT_COLOURS), len(POSITIONS))
    things = tuple(
        _thing(kind, colour, rng.randint(1, 3), position)
        for kind, colour, position in zip(kinds, colours, POSITIONS, strict=True)
    )
    return Scene(setting, pick(rng, tuple(BACKGROUNDS)), things)


def random_pet(rng: random.Random, *, species: str, name: str) -> Pet:
    return Pet(species, name, pick(rng, tuple(FUR_COLOURS)), pick(rng, MARKINGS))


def _thing(kind: str, colour: str, count: int, position: str) -> Thing:
    size = {1: 46, 2: 36, 3: 30}[count]
    width, height = {
        "book": (size * 3 // 5, size * 4 // 3),
        "plate": (size * 6 // 5, size // 2),
    }.get(kind, (size, size))
    gap = 12 if kind == "mug" else 8  # room for a mug's handle between copies
    total = count * width + (count - 1) * gap
    left = _COLUMN * POSITIONS.index(position) + (_COLUMN - total) // 2
    boxes = tuple(
        (x, _TABLE_TOP - height, x + width - 1, _TABLE_TOP - 1)
        for x in (left + i * (width + gap) for i in range(count))
    )
    return Thing(kind, colour, count, position, boxes)


def draw(picture: Picture) -> bytes:
    """The picture as PNG bytes; the same spec always gives the same bytes."""
    image_module, draw_module = _pillow()
    background = BACKGROUNDS[picture.background] if isinstance(picture, Scene) else (230, 236, 240)
    image = image_module.new("RGB", (WIDTH, HEIGHT), background)
    pen = draw_module.Draw(image)
    pen.rectangle((0, _TABLE_TOP, WIDTH - 1, HEIGHT - 1), fill=_TABLE)
    if isinstance(picture, Scene):
        for thing in picture.things:
            for box in thing.boxes:
                _draw_object(pen, thing.kind, box, OBJECT_COLOURS[thing.colour])
    else:
        _draw_pet(pen, picture)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _pillow() -> tuple[Any, Any]:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise MissingDependencyError(
            "the persona simulator draws its pictures with Pillow, which is not installed; "
            "install it with: pip install 'personavlm[bench]'"
        ) from None
    return Image, ImageDraw


def _draw_object(pen: ImageDraw.ImageDraw, kind: str, box: Box, rgb: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if kind in ("ball", "plate"):
        pen.ellipse(box, fill=rgb, outline=_OUTLINE, width=2)
    elif kind == "cone":
        pen.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=rgb, outline=_OUTLINE)
    elif kind == "mug":
        # The handle first, so the body covers its inner half.
        pen.ellipse((x1 - 6, y0 + 6, x1 + 9, y1 - 8), outline=_OUTLINE, width=3)
        pen.rectangle(box, fill=rgb, outline=_OUTLINE, width=2)
    else:  # box, book
        pen.rectangle(box, fill=rgb, outline=_OUTLINE, width=2)
        if kind == "book":  # a spine line, off the centre pixel
            pen.line((x0 + 4, y0 + 3, x0 + 4, y1 - 3), fill=_OUTLINE, width=1)


def _draw_pet(pen: ImageDraw.ImageDraw, pet: Pet) -> None:
    fur = FUR_COLOURS[pet.fur]
    mark = MARK_RGB[pet.mark_colour]
    for x in (165, 195, 245, 275):  # legs, then paws
        pen.rectangle((x, 200, x + 15, 238), fill=fur, outline=_OUTLINE)
        if pet.marking == "paws":
            pen.rectangle((x + 1, 230, x + 14, 237), fill=mark)
    tail = {
        "cat": (290, 110, 330, 190),
        "dog": (292, 140, 322, 170),
        "rabbit": (292, 150, 316, 174),
    }
    pen.ellipse(tail[pet.species], fill=fur, outline=_OUTLINE, width=2)
    pen.ellipse((150, 130, 300, 215), fill=fur, outline=_OUTLINE, width=2)  # body
    if pet.marking == "chest":
        pen.ellipse((160, 160, 195, 200), fill=mark)
    elif pet.marking == "stripes":
        for x in (216, 241, 266):
            pen.rectangle((x, 136, x + 8, 175), fill=mark)
    _draw_head(pen, pet.species, fur)


def _draw_head(pen: ImageDraw.ImageDraw, species: str, fur: tuple[int, int, int]) -> None:
    if species == "rabbit":
        ears = [(100, 20, 122, 100), (134, 20, 156, 100)]
        for ear in ears:
            pen.ellipse(ear, fill=fur, outline=_OUTLINE, width=2)
    elif species == "dog":
        for ear in [(78, 95, 104, 150), (156, 95, 182, 150)]:
            pen.ellipse(ear, fill=fur, outline=_OUTLINE, width=2)
    else:
        for points in [[(96, 100), (104, 62), (124, 92)], [(136, 92), (156, 62), (164, 100)]]:
            pen.polygon(points, fill=fur, outline=_OUTLINE)
    pen.ellipse((92, 87, 168, 163), fill=fur, outline=_OUTLINE, width=2)  # head
    for x in (114, 140):
        pen.ellipse((x, 112, x + 7, 119), fill=(20, 20, 20))
    pen.polygon([(126, 132), (134, 132), (130, 138)], fill=(200, 90, 110))
