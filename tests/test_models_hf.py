"""The in-process `hf:` backend and its Qwen-VL image preprocessing.

No weights can be downloaded, so the checkpoints are tiny random ones built once per session
(`hf_fixtures`): a Qwen2.5-VL with a real vision tower and a Qwen2 text LM. Generation runs
the real transformers code end to end. The image preprocessing is compared number for number
with transformers' own PIL/numpy Qwen2-VL image processor, which runs without torchvision.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_fixtures import (
    QWEN_VL_CHAT_TEMPLATE,
    build_qwen_vl,
    build_text_lm,
    without_chat_template,
)
from personavlm.errors import (
    ConfigError,
    MissingDependencyError,
    ModelResponseError,
    ValidationError,
)
from personavlm.models import (
    MODEL_SCHEMES,
    ChatModel,
    HFChatModel,
    ImagePart,
    Message,
    Reply,
    TextPart,
    load,
)
from personavlm.models.hf import chatml_prompt, check_json_reply
from personavlm.models.qwen_vision import (
    VisionPreprocessing,
    decode_image,
    patchify,
    preprocess_image,
    smart_resize,
)

Image = pytest.importorskip("PIL.Image")
INSTALL = "pip install 'personavlm[local]' -c constraints.txt"


def png(height: int, width: int, *, seed: int = 0, mode: str = "RGB") -> bytes:
    """A PNG of random pixels (so resampling differences would show)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image(height: int, width: int, *, seed: int = 0) -> ImagePart:
    return ImagePart(png(height, width, seed=seed), "image/png")


def user(*parts: str | ImagePart) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def runs_of(ids: Sequence[int], token: int) -> list[tuple[int, int]]:
    """(start, length) of each run of `token` in `ids`."""
    runs: list[tuple[int, int]] = []
    for index, value in enumerate(ids):
        if value != token:
            continue
        if runs and runs[-1][0] + runs[-1][1] == index:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((index, 1))
    return runs


# -- checkpoints (built once; each build takes well under a second) ---------------------------


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf-checkpoints")
    vl = build_qwen_vl(root / "qwen-vl")
    return {
        "vl": vl,
        "vl_plain": without_chat_template(vl, root / "qwen-vl-no-template"),
        "text": build_text_lm(root / "text", stop_on_endoftext=False),
        "text_stops": build_text_lm(root / "text-stops", stop_on_endoftext=True),
    }


@pytest.fixture(scope="session")
def vl_model(checkpoints: dict[str, Path]) -> HFChatModel:
    return HFChatModel(checkpoints["vl"])


@pytest.fixture(scope="session")
def text_model(checkpoints: dict[str, Path]) -> HFChatModel:
    return HFChatModel(checkpoints["text"])


# -- smart_resize ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((100, 150), (112, 140)),  # rounded to multiples of 28, area within bounds
        ((28, 28), (56, 56)),  # below min_pixels (3136): scaled up to 56x56
        ((1080, 1920), (336, 616)),  # above 230400: beta = 3, floored to multiples of 28
        ((500, 500), (476, 476)),  # 504x504 would be 254016 > 230400: floored instead
        ((480, 480), (476, 476)),  # 480 / 28 = 17.1 rounds to 17: 476
        ((10, 1000), (28, 560)),  # rounds to a zero side: scaled up to min_pixels
        ((20, 3000), (28, 2996)),  # elongated but within bounds: plain rounding
    ],
)
def test_smart_resize_matches_qwens_arithmetic(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert smart_resize(*size) == expected


def test_smart_resize_takes_qwens_default_bounds_when_asked() -> None:
    # Qwen's processor default max_pixels (12845056) leaves a 1080p frame nearly as is.
    assert smart_resize(1080, 1920, max_pixels=12845056) == (1092, 1932)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_smart_resize_always_gives_token_aligned_sides_within_bounds(h: int, w: int) -> None:
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(ValidationError, match="aspect ratio"):
            smart_resize(h, w)
        return
    rh, rw = smart_resize(h, w)
    assert rh % 28 == 0 and rw % 28 == 0
    assert rh >= 28 and rw >= 28
    assert rh * rw <= 230400
    if h * w >= 56 * 56:
        assert rh * rw >= 56 * 56


def test_smart_resize_refuses_extreme_aspect_ratios() -> None:
    with pytest.raises(ValidationError, match="aspect ratio is over 200"):
        smart_resize(1, 201)


# -- patchify and preprocessing ---------------------------------------------------------------


def test_patchify_groups_each_merge_block_and_repeats_the_frame() -> None:
    # Each pixel holds its own coordinates: value = 10000*c + 100*y + x. With patch 2 and
    # merge 2 an 8x8 image is a 4x4 grid of patches in 2x2 blocks of 2x2 patches.
    c, y, x = np.meshgrid(np.arange(3), np.arange(8), np.arange(8), indexing="ij")
    chw = (10000 * c + 100 * y + x).astype(np.float32)
    flat, grid_h, grid_w = patchify(chw, patch_size=2, merge_size=2, temporal_patch_size=2)
    assert (grid_h, grid_w) == (4, 4)
    assert flat.shape == (16, 3 * 2 * 2 * 2)

    def patch(row: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of the patch in `row`, read from channel 0."""
        value = int(flat[row, 0])
        return value // 100, value % 100

    # Rows: block (0,0) = patches (0,0) (0,1) (1,0) (1,1); then block (0,1) = (0,2) (0,3)...
    assert [patch(r) for r in range(8)] == [
        (0, 0), (0, 2), (2, 0), (2, 2),
        (0, 4), (0, 6), (2, 4), (2, 6),
    ]  # fmt: skip
    assert patch(8) == (4, 0)  # second block row
    # Within a row: channel, then frame (the still repeated), then the 2x2 pixels.
    first = flat[0].reshape(3, 2, 2, 2)
    assert np.array_equal(first[:, 0], first[:, 1])
    assert first[1, 0].tolist() == [[10000, 10001], [10100, 10101]]


def test_patchify_refuses_sides_off_the_grid() -> None:
    with pytest.raises(ValidationError, match="multiples of 28"):
        patchify(np.zeros((3, 30, 28)), patch_size=14, merge_size=2, temporal_patch_size=2)


def _reference_processor(**options: Any) -> Any:
    """transformers' PIL/numpy Qwen2-VL image processor (no torchvision needed)."""
    try:  # transformers >= 5
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil as Reference,
        )
    except ImportError:
        try:  # transformers 4.x: the "slow" processor is the PIL/numpy one
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
                Qwen2VLImageProcessor as Reference,
            )
        except ImportError as exc:
            pytest.skip(f"transformers' Qwen2-VL image processor cannot be imported: {exc}")
    return Reference(**options)


@pytest.mark.parametrize(
    ("height", "width", "mode"),
    [
        (60, 90, "RGB"),
        (480, 640, "RGB"),  # downscaled to fit 230400
        (1080, 1920, "RGB"),
        (10, 12, "RGB"),  # upscaled to min_pixels
        (100, 37, "RGBA"),  # transparency composited onto white
        (77, 200, "L"),  # grayscale
    ],
)
def test_preprocessing_equals_transformers_qwen2vl_image_processor(
    height: int, width: int, mode: str
) -> None:
    reference = _reference_processor(min_pixels=3136, max_pixels=230400)
    data = png(height, width, seed=height * width, mode=mode)
    expected = reference(images=[Image.open(io.BytesIO(data))], return_tensors="np")

    ours = preprocess_image(decode_image(data), VisionPreprocessing())

    assert [list(ours.grid_thw)] == expected["image_grid_thw"].tolist()
    assert ours.pixel_values.shape == expected["pixel_values"].shape
    assert ours.pixel_values.dtype == np.float32
    assert np.allclose(ours.pixel_values, expected["pixel_values"], atol=1e-6)


def test_preprocessing_shapes_and_token_count() -> None:
    settings_ = VisionPreprocessing()
    out = preprocess_image(decode_image(png(100, 150)), settings_)
    assert out.grid_thw == (1, 8, 10)  # 112x140 / 14
    assert out.pixel_values.shape == (80, 3 * 2 * 14 * 14)
    assert settings_.tokens_for(out.grid_thw) == 20  # 80 patches / merge 2x2


def test_decode_image_refuses_bytes_that_are_no_image() -> None:
    with pytest.raises(ValidationError, match="could not be decoded"):
        decode_image(b"\x89PNG\r\n\x1a\nnot really")


def test_vision_settings_read_the_checkpoint(tmp_path: Path) -> None:
    vision = SimpleNamespace(patch_size=16, spatial_merge_size=2, temporal_patch_size=2)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"patch_size": 16, "image_mean": [0.5, 0.5, 0.5], "image_std": [1, 1, 1]})
    )
    settings_ = VisionPreprocessing.from_checkpoint(tmp_path, vision, max_pixels=100000)
    assert (settings_.patch_size, settings_.merge_size, settings_.factor) == (16, 2, 32)
    assert settings_.image_mean == (0.5, 0.5, 0.5) and settings_.max_pixels == 100000

    vision.patch_size = 14
    with pytest.raises(ConfigError, match=r"patch_size=16.*patch_size=14"):
        VisionPreprocessing.from_checkpoint(tmp_path, vision)


def test_vision_settings_refuse_impossible_pixel_bounds() -> None:
    with pytest.raises(ConfigError, match="max_pixels"):
        VisionPreprocessing(min_pixels=3136, max_pixels=1000)


# -- the chat prompt --------------------------------------------------------------------------


def test_chatml_fallback_writes_what_qwens_template_writes(vl_model: HFChatModel) -> None:
    messages = [
        user("look at ", image(56, 56), " and ", image(84, 112, seed=1), " please"),
        Message.text("assistant", "a dog"),
        user("and now?"),
    ]
    rendered = vl_model.encode(messages).prompt  # through QWEN_VL_CHAT_TEMPLATE
    assert rendered == chatml_prompt(messages)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert rendered.endswith("<|im_start|>assistant\n")
    with_system = [Message.text("system", "be brief"), user("hi")]
    assert vl_model.encode(with_system).prompt == chatml_prompt(with_system)


def test_a_checkpoint_without_template_gets_the_same_tokens(
    checkpoints: dict[str, Path], vl_model: HFChatModel
) -> None:
    plain = HFChatModel(checkpoints["vl_plain"])
    messages = [user("look at ", image(56, 56), " please")]
    assert plain.encode(messages).input_ids == vl_model.encode(messages).input_ids
    assert plain._template is None and vl_model._template == QWEN_VL_CHAT_TEMPLATE


def test_one_image_sits_in_place_with_one_pad_per_merged_patch(vl_model: HFChatModel) -> None:
    tokenizer = vl_model._tokenizer
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    encoded = vl_model.encode([user("look at ", image(100, 150), " and tell me")])

    assert encoded.image_grid_thw == ((1, 8, 10),)
    assert encoded.image_token_counts == (20,)  # 1 * 8 * 10 / 2**2
    [(start, length)] = runs_of(encoded.input_ids, pad)
    assert length == 20
    assert encoded.pixel_values is not None and encoded.pixel_values.shape[0] == 80
    before = tokenizer.decode(list(encoded.input_ids[:start]))
    after = tokenizer.decode(list(encoded.input_ids[start + length :]))
    assert before.endswith("user\nlook at <|vision_start|>")
    assert after.startswith("<|vision_end|> and tell me<|im_end|>")


def test_two_images_are_placed_in_order(vl_model: HFChatModel) -> None:
    tokenizer = vl_model._tokenizer
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    first, second = image(56, 56), image(84, 112, seed=1)  # grids 4x4 and 6x8
    encoded = vl_model.encode([user("one ", first, " two ", second, " end")])

    assert encoded.image_grid_thw == ((1, 4, 4), (1, 6, 8))
    runs = runs_of(encoded.input_ids, pad)
    assert [length for _, length in runs] == [4, 12]
    between = tokenizer.decode(list(encoded.input_ids[runs[0][0] + 4 : runs[1][0]]))
    assert between == "<|vision_end|> two <|vision_start|>"
    assert encoded.pixel_values is not None
    assert encoded.pixel_values.shape[0] == 16 + 48  # first image's patches first


# -- generation ------------------------------------------------------------------------------


def test_generate_reads_text_image_text(vl_model: HFChatModel) -> None:
    messages = [user("look at ", image(100, 150), " and tell me")]
    reply = vl_model.generate(messages, max_tokens=6)

    assert isinstance(reply, Reply)
    assert reply.usage.prompt_tokens == len(vl_model.encode(messages).input_ids)
    assert 0 < reply.usage.completion_tokens <= 6
    assert reply.finish_reason in ("stop", "length")
    if reply.finish_reason == "length":
        assert reply.usage.completion_tokens == 6
    assert reply.model == str(vl_model.path) and reply.latency_s > 0


def test_generate_with_two_images_uses_qwens_3d_positions(vl_model: HFChatModel) -> None:
    reply = vl_model.generate([user("one ", image(56, 56), " two ", image(84, 112))], max_tokens=3)
    assert reply.usage.completion_tokens > 0
    # A 2x2 and a 3x4 block of merged tokens advance the rope position by 2 and 4 instead of
    # 4 and 12: 10 positions fewer than tokens, which only happens when the images were seen
    # as images (mm_token_type_ids / vision-start detection), as in training.
    deltas = getattr(vl_model._model.model, "rope_deltas", None)
    if deltas is None:
        pytest.skip("this transformers version keeps no rope_deltas to inspect")
    assert deltas.flatten().tolist() == [-10]


def test_greedy_is_deterministic_and_sampling_really_samples(vl_model: HFChatModel) -> None:
    import torch

    messages = [user("what is in ", image(56, 56), "?")]
    greedy = {vl_model.generate(messages, max_tokens=5).text for _ in range(2)}
    assert len(greedy) == 1
    # The checkpoint's generation_config says top_k=1 (as Qwen's does); temperature 1 must
    # still sample, so a near-uniform random model gives different continuations.
    torch.manual_seed(0)
    sampled = {vl_model.generate(messages, max_tokens=5, temperature=1.0).text for _ in range(4)}
    assert len(sampled) > 1


def test_text_only_model_answers_and_runs_to_max_tokens(text_model: HFChatModel) -> None:
    # This model always predicts <|endoftext|>, which its checkpoint does not treat as a stop.
    reply = text_model.generate([Message.text("user", "hello there")], max_tokens=4)
    assert reply.finish_reason == "length"
    assert reply.usage.completion_tokens == 4
    assert reply.usage.prompt_tokens > 0
    assert reply.text == ""  # special tokens are not text
    assert not text_model.has_vision


def test_stop_token_ends_the_reply(checkpoints: dict[str, Path]) -> None:
    model = HFChatModel(checkpoints["text_stops"])  # <|endoftext|> is a stop id here
    reply = model.generate([Message.text("user", "hello")], max_tokens=8)
    assert (reply.finish_reason, reply.usage.completion_tokens, reply.text) == ("stop", 1, "")


def test_schema_is_checked_after_the_fact(vl_model: HFChatModel) -> None:
    schema = {"type": "object", "required": ["answer"]}
    with pytest.raises(ModelResponseError, match="reply"):
        vl_model.generate([user("answer in JSON")], max_tokens=4, schema=schema)


def test_check_json_reply() -> None:
    schema = {"type": "object", "required": ["answer", "why"]}
    assert check_json_reply('{"answer": 1, "why": "x"}', schema) == '{"answer": 1, "why": "x"}'
    fenced = '```json\n{"answer": 1, "why": "x"}\n```'
    assert json.loads(check_json_reply(fenced, schema)) == {"answer": 1, "why": "x"}
    with pytest.raises(ModelResponseError, match=r"lacks the required key.*why"):
        check_json_reply('{"answer": 1}', schema)
    with pytest.raises(ModelResponseError, match=r"type list.*object"):
        check_json_reply("[1]", schema)
    with pytest.raises(ModelResponseError, match=r"not valid JSON.*raise max_tokens"):
        check_json_reply('{"answer": ', schema, finish_reason="length", max_tokens=4)


# -- loading and errors ----------------------------------------------------------------------


def test_load_builds_the_hf_backend(checkpoints: dict[str, Path]) -> None:
    model = load(f"hf:{checkpoints['text']}", dtype="float32", max_pixels=100352)
    assert isinstance(model, HFChatModel) and isinstance(model, ChatModel)
    assert model.name == f"hf:{checkpoints['text'].resolve()}"
    assert "hf" in MODEL_SCHEMES
    assert load(model.name).name == model.name


def test_load_rejects_unknown_options(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*maxpixels.*known: device, dtype"):
        load(f"hf:{checkpoints['text']}", maxpixels=1)


@pytest.mark.parametrize("spec", ["hf:", "hf:/no/such/checkpoint"])
def test_load_rejects_missing_directories(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"hf:<local checkpoint directory>|does not exist"):
        load(spec)


def test_missing_and_non_checkpoint_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'absent'} does not exist")):
        HFChatModel(tmp_path / "absent")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path)) + " is not .*no config.json"):
        HFChatModel(tmp_path)


def test_text_only_model_refuses_images(text_model: HFChatModel) -> None:
    with pytest.raises(ConfigError, match="has no vision tower"):
        text_model.generate([user("what is ", image(56, 56))], max_tokens=2)


def test_bad_settings_and_calls_are_refused(
    checkpoints: dict[str, Path], vl_model: HFChatModel
) -> None:
    with pytest.raises(ConfigError, match="dtype 'float8'"):
        HFChatModel(checkpoints["text"], dtype="float8")
    with pytest.raises(ConfigError, match="not a torch device"):
        HFChatModel(checkpoints["text"], device="toaster")
    with pytest.raises(ValidationError, match="max_tokens"):
        vl_model.generate([user("hi")], max_tokens=0)
    with pytest.raises(ValidationError, match="reserved vision token"):
        vl_model.encode([user("sneaky <|image_pad|>")])
    with pytest.raises(ValidationError, match="could not be decoded"):
        vl_model.encode([user("x", ImagePart(b"not an image", "image/png"))])


def test_missing_dependencies_name_the_install_command(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(MissingDependencyError, match="transformers") as raised:
        HFChatModel(checkpoints["text"])
    assert INSTALL in str(raised.value)


def test_importing_the_models_package_does_not_import_torch() -> None:
    code = (
        "import sys, personavlm.models, personavlm.models.hf; "
        "assert not {'torch', 'transformers', 'PIL'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
