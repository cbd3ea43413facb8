"""Qwen2-VL / Qwen2.5-VL image preprocessing with Pillow and numpy (no torchvision).

What the `hf:` backend feeds the vision tower, computed the way transformers'
`Qwen2VLImageProcessor` (its PIL/numpy variant) does, so a checkpoint sees the same pixels it
was trained on:

1. decode the bytes, convert to RGB (transparency composited onto white);
2. `smart_resize`: both sides become multiples of `factor = patch_size * merge_size` (28),
   the aspect ratio is kept as closely as that allows, and the area is brought into
   `[min_pixels, max_pixels]` (230400 by default, as in PersonaVLM's training);
3. bicubic resize (Pillow), rescale by 1/255, normalise with the OpenAI CLIP mean/std;
4. repeat the still frame `temporal_patch_size` (2) times and cut it into patches:
   `pixel_values` has shape `(grid_t * grid_h * grid_w, C * temporal_patch_size *
   patch_size**2)`, rows ordered by `merge_size x merge_size` blocks (each block's patches are
   adjacent, because the vision tower merges them into one language token), and
   `grid_thw = (1, height / patch_size, width / patch_size)`.

An image then stands for `grid_t * grid_h * grid_w / merge_size**2` `<|image_pad|>` tokens.
Pillow is imported when an image is decoded, never when this module is imported.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from personavlm.errors import ConfigError, MissingDependencyError, ValidationError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "MAX_ASPECT_RATIO",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PreprocessedImage",
    "VisionPreprocessing",
    "decode_image",
    "patchify",
    "preprocess_image",
    "smart_resize",
    "stack_images",
]

# PersonaVLM trains Qwen2.5-VL with max_pixels 230400 (section 5 of the paper); Qwen's own
# processor default (12845056) would turn one photo into thousands of tokens.
DEFAULT_MAX_PIXELS = 230400
DEFAULT_MIN_PIXELS = 56 * 56
# Qwen's processors refuse images more elongated than this (the grid would degenerate).
MAX_ASPECT_RATIO = 200
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INSTALL = "pip install 'personavlm[local]' -c constraints.txt"

FloatArray = npt.NDArray[np.float32]


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The (height, width) Qwen2-VL resizes an image to; same arithmetic as transformers'.

    Both sides become multiples of `factor`, the area lands in `[min_pixels, max_pixels]`
    and the aspect ratio is kept as closely as that allows. `round` is Python's (half to
    even), like the reference, so sizes agree to the pixel.
    """
    if height < 1 or width < 1:
        raise ValidationError(f"image is {width}x{height} pixels; it must be at least 1x1")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValidationError(
            f"image is {width}x{height} pixels: its aspect ratio is over {MAX_ASPECT_RATIO}, "
            "which Qwen-VL models cannot read; crop or pad it first"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True, slots=True)
class VisionPreprocessing:
    """The geometry and pixel statistics one checkpoint's vision tower expects."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    def __post_init__(self) -> None:
        for field in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field} must be a positive integer, got {value!r}")
        if not isinstance(self.max_pixels, int) or self.max_pixels < self.min_pixels:
            raise ConfigError(
                f"max_pixels ({self.max_pixels!r}) must be an integer >= min_pixels "
                f"({self.min_pixels})"
            )
        if self.max_pixels < self.factor**2:
            raise ConfigError(
                f"max_pixels {self.max_pixels} is below one merged patch "
                f"({self.factor}x{self.factor} = {self.factor**2} pixels); raise it"
            )

    @property
    def factor(self) -> int:
        """Side lengths are multiples of this: one language token covers factor x factor."""
        return self.patch_size * self.merge_size

    def tokens_for(self, grid_thw: tuple[int, int, int]) -> int:
        """How many `<|image_pad|>` tokens an image with this grid takes in the prompt."""
        t, h, w = grid_thw
        return (t * h * w) // (self.merge_size**2)

    @classmethod
    def from_checkpoint(
        cls,
        directory: Path,
        vision_config: Any,
        *,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> VisionPreprocessing:
        """The settings of the checkpoint in `directory`.

        Patch geometry comes from `preprocessor_config.json` when it says, else from the
        model's vision config, else Qwen's defaults; the two must agree when both say.
        `min_pixels`/`max_pixels` are the caller's (the checkpoint's own max_pixels is
        Qwen's huge default, not what PersonaVLM was trained with).
        """
        pre = _read_preprocessor_config(directory)
        geometry = {
            "patch_size": ("patch_size", "patch_size"),
            "merge_size": ("merge_size", "spatial_merge_size"),
            "temporal_patch_size": ("temporal_patch_size", "temporal_patch_size"),
        }
        values: dict[str, Any] = {}
        for field, (pre_key, vision_key) in geometry.items():
            from_pre = pre.get(pre_key)
            from_model = getattr(vision_config, vision_key, None)
            if from_pre is not None and from_model is not None and from_pre != from_model:
                raise ConfigError(
                    f"checkpoint {directory}: preprocessor_config.json says {pre_key}="
                    f"{from_pre!r} but the model's vision config says {vision_key}="
                    f"{from_model!r}; fix one of them"
                )
            chosen = from_pre if from_pre is not None else from_model
            if chosen is not None:
                values[field] = chosen
        mean, std = pre.get("image_mean"), pre.get("image_std")
        if mean is not None:
            values["image_mean"] = _three_floats(directory, "image_mean", mean)
        if std is not None:
            values["image_std"] = _three_floats(directory, "image_std", std)
        return cls(min_pixels=min_pixels, max_pixels=max_pixels, **values)


@dataclass(frozen=True, slots=True)
class PreprocessedImage:
    """One image ready for the vision tower."""

    pixel_values: FloatArray  # (grid_t * grid_h * grid_w, C * temporal * patch * patch)
    grid_thw: tuple[int, int, int]


def decode_image(data: bytes) -> Image.Image:
    """The RGB image encoded in `data`; transparency is composited onto white.

    White (not black) is what transformers' `convert_to_rgb` uses, so a transparent PNG
    looks to the model as it did in training.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingDependencyError(
            f"reading images needs Pillow, which is not installed; run: {_INSTALL}"
        ) from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValidationError(
            f"image ({len(data)} bytes) could not be decoded: {exc}; pass the bytes of a "
            "PNG, JPEG, GIF, WebP or BMP file"
        ) from None
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def preprocess_image(image: Image.Image, settings: VisionPreprocessing) -> PreprocessedImage:
    """Resize, normalise and patchify one RGB image (see the module docstring)."""
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    height, width = smart_resize(
        image.height,
        image.width,
        factor=settings.factor,
        min_pixels=settings.min_pixels,
        max_pixels=settings.max_pixels,
    )
    resized = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    # The reference rescales in float64 and casts to float32 before normalising in float32;
    # doing the same keeps the two bit-identical rather than merely close.
    pixels = (np.asarray(resized, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(settings.image_mean, dtype=np.float32)
    std = np.asarray(settings.image_std, dtype=np.float32)
    normalised = ((pixels - mean) / std).transpose(2, 0, 1)  # HWC -> CHW
    flat, grid_h, grid_w = patchify(
        normalised,
        patch_size=settings.patch_size,
        merge_size=settings.merge_size,
        temporal_patch_size=settings.temporal_patch_size,
    )
    return PreprocessedImage(pixel_values=flat, grid_thw=(1, grid_h, grid_w))


def patchify(
    chw: npt.NDArray[np.floating[Any]],
    *,
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
) -> tuple[FloatArray, int, int]:
    """A still (C, H, W) image as Qwen-VL's flattened patches, with grid_h and grid_w.

    H and W must be multiples of `patch_size * merge_size` (smart_resize sees to it). Row
    order is (block row, block column, row in block, column in block): the vision tower
    merges each run of `merge_size**2` consecutive rows into one token. Each row is
    (channel, frame, patch row, patch column) flattened; the frame axis repeats the image
    `temporal_patch_size` times, as Qwen does for stills.
    """
    channels, height, width = chw.shape
    factor = patch_size * merge_size
    if height % factor or width % factor:
        raise ValidationError(
            f"patchify needs sides that are multiples of {factor}, got {height}x{width}"
        )
    grid_h, grid_w = height // patch_size, width // patch_size
    blocks = chw.reshape(
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> (block row, block col, row in block, col in block, C, patch row, patch col)
    blocks = blocks.transpose(1, 4, 2, 5, 0, 3, 6)
    frames = np.broadcast_to(
        blocks[:, :, :, :, :, None, :, :],
        (*blocks.shape[:5], temporal_patch_size, *blocks.shape[5:]),
    )
    flat = frames.reshape(
        grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size
    ).astype(np.float32)
    return flat, grid_h, grid_w


def stack_images(images: Sequence[PreprocessedImage]) -> tuple[FloatArray, list[list[int]]]:
    """All images' patches in one array, in order, and their grids (what the model takes)."""
    pixel_values = np.concatenate([image.pixel_values for image in images], axis=0)
    return pixel_values, [list(image.grid_thw) for image in images]


def _read_preprocessor_config(directory: Path) -> Mapping[str, Any]:
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); fix or remove it") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(loaded).__name__}")
    return loaded


def _three_floats(directory: Path, key: str, value: object) -> tuple[float, float, float]:
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return (float(value[0]), float(value[1]), float(value[2]))
    raise ConfigError(
        f"checkpoint {directory}: preprocessor_config.json {key} must be three numbers "
        f"(one per RGB channel), got {value!r}"
    )
