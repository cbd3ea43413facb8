"""Tests of settings resolution (personavlm.settings) and encoder selection (personavlm.embed).

Every call passes `env` explicitly: nothing here reads or changes os.environ.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from personavlm import embed
from personavlm.embed import HashingEmbedder, MiniLMEmbedder
from personavlm.errors import ConfigError
from personavlm.settings import DEFAULT_EMBEDDER, Settings, load_settings

# --------------------------------------------------------------------- where the database lives


def test_db_argument_beats_every_environment_variable(tmp_path: Path) -> None:
    env = {
        "PERSONAVLM_DB": str(tmp_path / "from-env.db"),
        "PERSONAVLM_HOME": str(tmp_path / "home"),
    }
    settings = load_settings(db=str(tmp_path / "from-arg.db"), env=env)
    assert settings.db_path == (tmp_path / "from-arg.db").resolve()


def test_personavlm_db_beats_personavlm_home(tmp_path: Path) -> None:
    env = {
        "PERSONAVLM_DB": str(tmp_path / "from-env.db"),
        "PERSONAVLM_HOME": str(tmp_path / "home"),
    }
    settings = load_settings(env=env)
    assert settings.db_path == (tmp_path / "from-env.db").resolve()
    assert settings.home == tmp_path / "home"


def test_personavlm_home_holds_personavlm_db_file(tmp_path: Path) -> None:
    settings = load_settings(env={"PERSONAVLM_HOME": str(tmp_path / "home")})
    assert settings.db_path == (tmp_path / "home" / "personavlm.db").resolve()
    assert settings.home == tmp_path / "home"


def test_default_location_is_under_local_share() -> None:
    settings = load_settings(env={})
    home = Path("~/.local/share/personavlm").expanduser()
    assert settings.home == home
    assert settings.db_path == (home / "personavlm.db").resolve()


def test_empty_environment_values_count_as_unset(tmp_path: Path) -> None:
    env = {"PERSONAVLM_DB": "", "PERSONAVLM_HOME": str(tmp_path), "PERSONAVLM_EMBEDDER": ""}
    settings = load_settings(env=env)
    assert settings.db_path == (tmp_path / "personavlm.db").resolve()
    assert settings.embedder == DEFAULT_EMBEDDER


def test_tilde_in_db_is_expanded() -> None:
    settings = load_settings(db="~/some-personavlm-test.db", env={})
    assert settings.db_path == (Path.home() / "some-personavlm-test.db").resolve()


def test_load_settings_does_not_create_anything(tmp_path: Path) -> None:
    load_settings(env={"PERSONAVLM_HOME": str(tmp_path / "not-yet")})
    assert not (tmp_path / "not-yet").exists()


# --------------------------------------------------------------------- URLs


def test_sqlite_url_with_three_slashes_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(db="sqlite:///data/rel.db", env={})
    assert settings.db_path == (tmp_path / "data" / "rel.db").resolve()
    assert settings.db_path.is_absolute()


def test_sqlite_url_with_four_slashes_is_absolute(tmp_path: Path) -> None:
    target = tmp_path / "abs.db"
    settings = load_settings(db=f"sqlite:///{target}", env={})  # target starts with "/"
    assert f"sqlite:///{target}".startswith("sqlite:////")
    assert settings.db_path == target.resolve()


def test_sqlite_url_from_environment(tmp_path: Path) -> None:
    settings = load_settings(env={"PERSONAVLM_DB": f"sqlite:///{tmp_path}/env.db"})
    assert settings.db_path == (tmp_path / "env.db").resolve()


@pytest.mark.parametrize(
    "url", ["postgresql://user@localhost/memory", "postgres://localhost:5432/memory"]
)
def test_postgresql_url_selects_postgres(url: str, tmp_path: Path) -> None:
    settings = load_settings(db=url, env={"PERSONAVLM_HOME": str(tmp_path)})
    assert (settings.location, settings.db_url, settings.db_path) == (url, url, None)
    # PostgreSQL keeps rows only: pictures go to a folder under the home.
    assert settings.blob_dir == tmp_path / "blobs"


def test_postgresql_url_from_environment_with_blob_folder(tmp_path: Path) -> None:
    env = {
        "PERSONAVLM_DB": "postgresql://localhost/x",
        "PERSONAVLM_HOME": "/",
        "PERSONAVLM_BLOBS": str(tmp_path / "pictures"),
    }
    settings = load_settings(env=env)
    assert settings.location == "postgresql://localhost/x"
    assert settings.blob_dir == (tmp_path / "pictures").resolve()


def test_other_url_schemes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL"):
        load_settings(db="mysql://localhost/memory", env={})


def test_directory_as_db_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_settings(db=str(tmp_path), env={})


def test_directory_as_db_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_settings(db=f"sqlite:///{tmp_path}", env={})


# --------------------------------------------------------------------- encoder and blobs


def test_embedder_argument_beats_environment() -> None:
    settings = load_settings(embedder="hashing-64", env={"PERSONAVLM_EMBEDDER": "hashing"})
    assert settings.embedder == "hashing-64"


def test_embedder_from_environment() -> None:
    assert load_settings(env={"PERSONAVLM_EMBEDDER": "hashing"}).embedder == "hashing"


def test_embedder_default_is_minilm() -> None:
    assert DEFAULT_EMBEDDER == "minilm"
    assert load_settings(env={}).embedder == "minilm"


def test_blob_dir_sits_next_to_the_db_file(tmp_path: Path) -> None:
    settings = load_settings(db=str(tmp_path / "sub" / "memory.db"), env={})
    assert settings.blob_dir == (tmp_path / "sub" / "memory.db.blobs").resolve()
    assert settings.blob_dir.parent == settings.db_path.parent


def test_settings_is_immutable(tmp_path: Path) -> None:
    settings = load_settings(db=str(tmp_path / "x.db"), env={})
    assert isinstance(settings, Settings)
    with pytest.raises(AttributeError):
        settings.embedder = "hashing"  # type: ignore[misc]


# --------------------------------------------------------------------- personavlm.embed.load


@pytest.mark.parametrize("name", ["bert", "hashing-", "hashing-0", "hashing-x", "HASHING", ""])
def test_unknown_embedder_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown embedder"):
        embed.load(name)


def test_hashing_with_dimension() -> None:
    encoder = embed.load("hashing-64")
    assert isinstance(encoder, HashingEmbedder)
    assert encoder.dim == 64
    assert encoder.name == "hashing-64"
    assert embed.load("hashing-64").encode(["hello world"]).shape == (1, 64)


def test_hashing_default_dimension_is_256() -> None:
    encoder = embed.load("hashing")
    assert (encoder.name, encoder.dim) == ("hashing-256", 256)


@pytest.mark.parametrize("name", ["minilm", "all-MiniLM-L6-v2"])
def test_minilm_by_either_name(name: str) -> None:
    # Constructing it loads no weights: name and dim are known up front.
    encoder = embed.load(name)
    assert isinstance(encoder, MiniLMEmbedder)
    assert (encoder.name, encoder.dim) == ("all-MiniLM-L6-v2", 384)
