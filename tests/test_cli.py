"""End-to-end tests of the `personavlm` command line.

The installed entry point runs as a real subprocess against real SQLite files under tmp_path,
with PERSONAVLM_HOME pointed at a temporary folder so nothing touches ~/.local. Every command
uses the weight-free `hashing` encoder except the one test marked slow, which runs the bundled
MiniLM the way a user's first run does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from personavlm.embed import HashingEmbedder
from personavlm.memory.store import MemoryStore

EXE = Path(sys.executable).with_name("personavlm")
RETRIEVAL_SMALL = Path(__file__).parent / "data" / "retrieval_small.json"
SAMPLE_TURNS = 26
SAMPLE_SESSIONS = 6
PARALLEL = max(2, min(8, os.cpu_count() or 2))


# --------------------------------------------------------------------- running the CLI


@dataclass(frozen=True)
class Cli:
    """The `personavlm` executable bound to one PERSONAVLM_HOME and (by default) one --db."""

    home: Path
    db: Path
    embedder: str | None = "hashing"  # PERSONAVLM_EMBEDDER; None leaves it unset

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAVLM_")}
        env["PERSONAVLM_HOME"] = str(self.home)
        if self.embedder is not None:
            env["PERSONAVLM_EMBEDDER"] = self.embedder
        env["NO_COLOR"] = "1"
        env["COLUMNS"] = "200"  # help text is not wrapped mid-example
        return env | (extra or {})

    def run(
        self,
        *args: str,
        db: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(EXE), *args, *(["--db", str(self.db)] if db else [])]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self.env(env),
            cwd=self.home,
            timeout=timeout,
            check=False,
        )

    def many(
        self, *commands: tuple[str, ...], db: bool = True
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands side by side (each CLI run is mostly interpreter start-up);
        results in the order given."""
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            return list(pool.map(lambda args: self.run(*args, db=db), commands))

    def ok(self, *args: str, **kwargs: Any) -> str:
        return succeeded(self.run(*args, **kwargs))

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs))

    def fails(self, code: int, *args: str, **kwargs: Any) -> str:
        """Run a command that must fail with `code`; returns its one `error:` line."""
        result = self.run(*args, **kwargs)
        assert result.returncode == code, (
            f"{args}: expected exit {code}, got {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return error_line(result)


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0]
    return errors[0]


def make_cli(root: Path, **kwargs: Any) -> Cli:
    home = root / "home"
    home.mkdir(parents=True)
    return Cli(home=home, db=root / "memory.db", **kwargs)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


def tiny_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jsonl(path: Path, *turns: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t) + "\n" for t in turns), encoding="utf-8")
    return path


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def hit_ids(hits: list[dict[str, Any]]) -> list[int]:
    return [hit["memory"]["id"] for hit in hits]


# --------------------------------------------------------------------- a shared, read-only store

# (id, type, key, content, keywords, time) of what `ann` holds; tests below read it only.
# The first three are added through the CLI, the rest through the library (same encoder) to
# spare a few interpreter start-ups.
ANN = [
    (1, "core", "favourite drink", "Sprite", "", "2024-01-05 10:00"),
    (2, "core", "favourite drink", "Coca-Cola", "", "2024-03-01 10:00"),
    (3, "semantic", None, "Ann's dog Bobby is a beagle", "dog, Bobby", "2024-02-10 09:00"),
    (4, "semantic", None, "Ann lives in Lyon near the river", "", "2024-01-20 08:00"),
    (5, "semantic", None, "Ann's cat Misty sleeps all day", "", "2024-03-15 12:00"),
    (6, "procedural", "reply style", "Answer briefly, no emojis", "", "2024-02-01 09:00"),
    (7, "episodic", None, "Ann walked Bobby the beagle in the park", "", "2024-03-20 18:00"),
    (8, "semantic", None, "Ann's dog Bobby loves long walks", "", "2024-03-25 10:00"),
]


@pytest.fixture(scope="module")
def ann(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = make_cli(tmp_path_factory.mktemp("ann"))
    for memory_id, kind, key, content, keywords, time in ANN[:3]:
        args = ["memory", "add", content, "--user", "ann", "--type", kind, "--time", time]
        args += ["--key", key] if key else []
        args += ["--keywords", keywords] if keywords else []
        added = cli.json(*args)
        assert added["id"] == memory_id
        assert added["content"] == content
        assert added["key"] == key
        assert added["valid_from"] == time + ":00"
        assert added["status"] == "active"
    with MemoryStore.open(cli.db, embedder=HashingEmbedder()) as store:
        for memory_id, kind, key, content, _, time in ANN[3:]:
            assert store.add("ann", kind, content, key=key, time=time).id == memory_id
    return cli


def test_add_returns_the_stored_memory(ann: Cli) -> None:
    dog = ann.json("memory", "get", "3", "--user", "ann")
    assert dog == dog | {
        "id": 3,
        "user_id": "ann",
        "type": "semantic",
        "key": None,
        "content": "Ann's dog Bobby is a beagle",
        "keywords": ["dog", "Bobby"],
        "event_start": "2024-02-10 09:00:00",
        "event_end": "2024-02-10 09:00:00",
        "valid_from": "2024-02-10 09:00:00",
        "valid_to": None,
        "status": "active",
        "version": 1,
        "supersedes": None,
    }


def test_core_key_supersedes_and_timeline(ann: Cli) -> None:
    sprite, chain = (
        json.loads(succeeded(result))
        for result in ann.many(
            ("memory", "get", "1", "--user", "ann", "--json"),
            ("memory", "timeline", "2", "--user", "ann", "--json"),
        )
    )
    assert (sprite["status"], sprite["valid_to"], sprite["version"]) == (
        "superseded",
        "2024-03-01 10:00:00",
        1,
    )
    # Sprite -> Coca-Cola: the older version ends when the newer one begins.
    assert [(m["id"], m["content"], m["status"], m["version"]) for m in chain] == [
        (1, "Sprite", "superseded", 1),
        (2, "Coca-Cola", "active", 2),
    ]
    assert (chain[0]["valid_from"], chain[0]["valid_to"]) == (
        "2024-01-05 10:00:00",
        "2024-03-01 10:00:00",
    )
    assert (chain[1]["valid_from"], chain[1]["valid_to"]) == ("2024-03-01 10:00:00", None)
    assert chain[1]["supersedes"] == 1


def test_list_filters(ann: Cli) -> None:
    cases = {
        (): [4, 6, 3, 2, 5, 7, 8],  # active only, in event-time order
        ("--status", "all"): [1, 4, 6, 3, 2, 5, 7, 8],
        ("--type", "semantic"): [4, 3, 5, 8],
        ("--type", "core", "--type", "procedural"): [6, 2],
        ("--key", "favourite drink", "--status", "all"): [1, 2],
        ("--start", "2024-03-01 00:00", "--end", "2024-03-20 23:59"): [2, 5, 7],
        ("--end", "2024-02-01 09:00"): [4, 6],  # the end is inclusive
        ("--limit", "2", "--offset", "1"): [6, 3],
    }
    results = ann.many(*(("memory", "list", "--user", "ann", *a, "--json") for a in cases))
    for (args, expected), result in zip(cases.items(), results, strict=True):
        assert ids(json.loads(succeeded(result))) == expected, args


def test_search_types_and_k(ann: Cli) -> None:
    hits = ann.json("memory", "search", "Bobby the beagle", "--user", "ann", "--type", "semantic")
    assert {h["memory"]["type"] for h in hits} == {"semantic"}
    assert hit_ids(hits)[0] == 3
    assert set(hit_ids(hits)) <= {3, 4, 5, 8}
    assert hits == sorted(hits, key=lambda h: -h["score"])

    one_each = ann.json(
        "memory", "search", "Bobby beagle", "--user", "ann", "--k", "1",
        "--type", "semantic", "--type", "episodic",
    )  # fmt: skip
    assert [(h["memory"]["type"], h["memory"]["id"]) for h in one_each] == [
        ("semantic", 3),
        ("episodic", 7),
    ]
    assert one_each[0]["ranks"] == {"bm25": 1, "dense": 1}

    # Default: semantic, episodic and procedural; core only when asked for.
    default = ann.json("memory", "search", "Bobby drink reply", "--user", "ann")
    assert {h["memory"]["type"] for h in default} == {"semantic", "episodic", "procedural"}
    core = ann.json("memory", "search", "favourite drink", "--user", "ann", "--type", "core")
    assert hit_ids(core) == [2]  # the superseded Sprite is never a hit


def test_search_exclude(ann: Cli) -> None:
    args = ("memory", "search", "dog Bobby", "--user", "ann", "--type", "semantic")
    excluded = ann.json(*args, "--exclude", "3,5")
    assert hit_ids(excluded)[0] == 8
    assert not {3, 5} & set(hit_ids(excluded))


def test_search_time_window(ann: Cli) -> None:
    args = ("memory", "search", "dog Bobby", "--user", "ann", "--type", "semantic", "--json")
    late, early, window = (
        hit_ids(json.loads(succeeded(result)))
        for result in ann.many(
            (*args, "--start", "2024-03-01 00:00"),
            (*args, "--end", "2024-02-28 00:00"),
            (*args, "--start", "2024-02-01 00:00", "--end", "2024-02-28 00:00"),
        )
    )
    assert late[0] == 8
    assert set(late) <= {5, 8}
    assert early[0] == 3
    assert set(early) <= {3, 4}
    assert window == [3]


def test_text_output(ann: Cli) -> None:
    listed = ann.ok("memory", "list", "--user", "ann", "--type", "core", "--status", "all")
    assert listed.splitlines() == [
        "#1 core [favourite drink] v1 superseded from 2024-01-05 10:00:00 "
        "until 2024-03-01 10:00:00: Sprite",
        "#2 core [favourite drink] v2 active from 2024-03-01 10:00:00: Coca-Cola",
    ]
    found = ann.ok("memory", "search", "beagle", "--user", "ann", "--type", "semantic", "--k", "1")
    (line,) = found.splitlines()
    assert line.endswith("#3 semantic 2024-02-10 09:00:00  Ann's dog Bobby is a beagle")
    assert float(line.split()[0]) > 0
    history = ann.ok("memory", "history", "2", "--user", "ann")
    (event,) = history.splitlines()
    assert event.startswith("event 2 add by cli at ")
    assert event.endswith(": #1, #2")


# --------------------------------------------------------------------- changing memories


def test_update_history_undo_invalidate_delete(cli: Cli) -> None:
    def add(content: str, time: str) -> int:
        added = cli.json(
            "memory", "add", content, "--user", "bea", "--type", "semantic", "--time", time
        )
        return int(added["id"])

    def states() -> dict[int, tuple[str, str | None]]:
        listed = cli.json("memory", "list", "--user", "bea", "--status", "all")
        return {m["id"]: (m["status"], m["valid_to"]) for m in listed}

    green = add("Bea's favourite colour is green", "2024-01-01 09:00")
    blue = cli.json(
        "memory", "update", str(green), "--user", "bea",
        "--content", "Bea's favourite colour is blue", "--time", "2024-02-01 09:00",
    )  # fmt: skip
    assert blue["content"] == "Bea's favourite colour is blue"
    assert (blue["version"], blue["supersedes"], blue["status"]) == (2, green, "active")
    assert blue["valid_from"] == "2024-02-01 09:00:00"
    updated = {green: ("superseded", "2024-02-01 09:00:00"), blue["id"]: ("active", None)}

    events = cli.json("memory", "history", str(green), "--user", "bea")
    assert [e["op"] for e in events] == ["add", "update"]
    update = events[1]
    assert [c["memory_id"] for c in update["changes"]] == [green, blue["id"]]
    assert update["changes"][0]["after"]["status"] == "superseded"
    assert update["changes"][1]["before"] is None

    # Undo of the update restores the old version ...
    undo = cli.json("memory", "undo", str(update["id"]), "--user", "bea")
    assert (undo["op"], undo["undoes"], undo["actor"]) == ("undo", update["id"], "cli")
    assert states() == {green: ("active", None), blue["id"]: ("deleted", None)}
    # ... and undo of the undo redoes it.
    redo = cli.json("memory", "undo", str(undo["id"]), "--user", "bea")
    assert (redo["op"], redo["undoes"]) == ("undo", undo["id"])
    listed, history, chain = (
        json.loads(succeeded(result))
        for result in cli.many(
            ("memory", "list", "--user", "bea", "--status", "all", "--json"),
            ("memory", "history", str(blue["id"]), "--user", "bea", "--json"),
            ("memory", "timeline", str(green), "--user", "bea", "--json"),
        )
    )
    assert {m["id"]: (m["status"], m["valid_to"]) for m in listed} == updated
    assert ids(history) == [update["id"], undo["id"], redo["id"]]
    assert [(m["id"], m["status"]) for m in chain] == [
        (green, "superseded"),
        (blue["id"], "active"),
    ]

    bike = add("Bea owns a red bike", "2024-01-10 10:00")
    gone = cli.json(
        "memory", "invalidate", str(bike), "--user", "bea", "--time", "2024-03-01 08:00"
    )
    assert (gone["status"], gone["valid_to"]) == ("invalidated", "2024-03-01 08:00:00")
    assert "it is invalidated" in cli.fails(2, "memory", "invalidate", str(bike), "--user", "bea")

    olives = add("Bea dislikes olives on pizza", "2024-01-15 10:00")
    deleted = cli.json("memory", "delete", str(olives), "--user", "bea")
    assert (deleted["status"], deleted["valid_to"]) == ("deleted", None)

    query = ("memory", "search", "olives pizza red bike colour", "--user", "bea", "--k", "10")
    every, hits, history = (
        json.loads(succeeded(result))
        for result in cli.many(
            ("memory", "list", "--user", "bea", "--status", "all", "--json"),
            (*query, "--json"),
            ("memory", "history", str(olives), "--user", "bea", "--json"),
        )
    )
    assert ids(every) == [green, bike, olives, blue["id"]]  # event-time order
    assert [m["status"] for m in every] == ["superseded", "invalidated", "deleted", "active"]
    assert hit_ids(hits) == [blue["id"]]  # only active memories are hits

    delete_event = history[-1]
    assert delete_event["op"] == "delete"
    cli.json("memory", "undo", str(delete_event["id"]), "--user", "bea")
    assert set(hit_ids(cli.json(*query))) == {olives, blue["id"]}


def test_personality_record_show_history(cli: Cli) -> None:
    reading = ["-o", "5", "-c", "3", "-e", "2", "-a", "4", "-n", "3"]
    first = cli.json(
        "personality", "record", "--user", "pat", *reading, "--time", "2024-03-01 10:00"
    )
    assert first["step"] == 1
    cli.json("personality", "record", "--user", "pat", *reading, "--time", "2024-03-02 10:00")

    lam0, lam1 = 0.5, 0.7 - 0.2 * math.cos(math.pi / 50)
    values = (5, 3, 2, 4, 3)
    after_one = [lam0 * 3.0 + (1 - lam0) * v for v in values]
    after_two = [lam1 * p + (1 - lam1) * v for p, v in zip(after_one, values, strict=True)]
    names = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]

    shown = cli.json("personality", "show", "--user", "pat")
    assert shown["step"] == 2
    assert list(shown["traits"]) == names
    assert list(shown["traits"].values()) == pytest.approx(after_two, abs=1e-9)
    assert list(first["traits"].values()) == pytest.approx(after_one, abs=1e-9)

    records = cli.json("personality", "history", "--user", "pat")
    assert [r["time"] for r in records] == ["2024-03-01 10:00:00", "2024-03-02 10:00:00"]
    assert [r["reading"] for r in records] == [dict(zip(names, values, strict=True))] * 2
    assert [r["absorbed"] for r in records] == [True, True]
    assert [r["step_after"] for r in records] == [1, 2]
    assert list(records[1]["traits_after"].values()) == pytest.approx(after_two, abs=1e-9)

    text = cli.ok("personality", "show", "--user", "pat")
    assert f"Openness: {after_two[0]:.1f}" in text
    assert "(readings absorbed: 2)" in text


# --------------------------------------------------------------------- ingest


def test_ingest_sample_is_idempotent_and_searchable(cli: Cli) -> None:
    # No --db: the store lands in PERSONAVLM_HOME.
    report = cli.json("ingest", "--user", "u", "--sample", db=False)
    assert report == {
        "user_id": "u",
        "added": SAMPLE_TURNS,
        "skipped": 0,
        "sessions": SAMPLE_SESSIONS,
    }
    default_db = cli.home / "personavlm.db"
    assert default_db.is_file()

    again = cli.ok("ingest", "--user", "u", "--sample", db=False)
    assert again.startswith("0 turns added, 26 already stored; user 'u' has 6 sessions")

    dog = cli.json("memory", "search", "beagle Bobby", "--user", "u", "--type", "episodic",
                   "--k", "3", db=False)  # fmt: skip
    turns = {h["turns"][0]["ext_id"]: h for h in dog}
    assert "s1-3" in turns
    assert "Bobby" in turns["s1-3"]["memory"]["content"]
    assert turns["s1-3"]["turns"][0]["time"] == "2024-03-02 09:13:00"

    photo = cli.json("memory", "search", "beagle hillside blue sky hike", "--user", "u",
                     "--type", "episodic", "--k", "3", db=False)  # fmt: skip
    with_image = [h for h in photo if h["images"]]
    assert [h["turns"][0]["ext_id"] for h in with_image] == ["s4-1"]
    (image,) = with_image[0]["images"]
    assert "path" not in image  # rows and results name blobs by sha256 only
    blob = cli.home / "personavlm.db.blobs" / image["id"][:2] / image["id"]
    assert blob.is_file()
    assert image["mime"] == "image/png"
    assert image["size"] == blob.stat().st_size
    assert image["id"] == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert image["caption"].startswith("a brown beagle")


def test_ingest_own_file_with_relative_image(cli: Cli, tmp_path: Path) -> None:
    png = tiny_png()
    (tmp_path / "chats" / "pics").mkdir(parents=True)
    (tmp_path / "chats" / "pics" / "cat.png").write_bytes(png)
    chat = jsonl(
        tmp_path / "chats" / "chat.jsonl",
        {"id": "t1", "time": "2024-05-01 08:00", "role": "user", "speaker": "Kim",
         "text": "Good morning!"},
        {"id": "t2", "time": "2024-05-01 08:01", "role": "user", "speaker": "Kim",
         "text": "Meet my new kitten", "images": ["pics/cat.png"],
         "caption": "a grey kitten asleep on a windowsill"},
        {"id": "t3", "time": "2024-05-01 12:30", "role": "assistant", "text": "So cute!"},
    )  # fmt: skip
    # Run from another folder: image paths are relative to the file, not the cwd.
    report = cli.json("ingest", str(chat), "--user", "kim")
    assert report == {"user_id": "kim", "added": 3, "skipped": 0, "sessions": 2}

    hits = cli.json("memory", "search", "grey kitten windowsill", "--user", "kim",
                    "--type", "episodic", "--k", "1")  # fmt: skip
    (hit,) = hits
    assert hit["memory"]["content"] == (
        "Kim: Meet my new kitten\n[image: a grey kitten asleep on a windowsill]"
    )
    (turn,) = hit["turns"]
    assert (turn["ext_id"], turn["speaker"], turn["caption"]) == (
        "t2",
        "Kim",
        "a grey kitten asleep on a windowsill",
    )
    digest = hashlib.sha256(png).hexdigest()
    assert turn["image_ids"] == [digest]
    (image,) = hit["images"]
    assert (image["id"], image["mime"], image["size"]) == (digest, "image/png", len(png))
    assert image["caption"] == "a grey kitten asleep on a windowsill"
    blob_dir = cli.db.with_name("memory.db.blobs")
    assert (blob_dir / digest[:2] / digest).read_bytes() == png

    listed = cli.json("memory", "list", "--user", "kim")
    assert [m["event_start"] for m in listed] == [
        "2024-05-01 08:00:00",
        "2024-05-01 08:01:00",
        "2024-05-01 12:30:00",
    ]
    # Re-ingesting the same file changes nothing.
    assert cli.json("ingest", str(chat), "--user", "kim")["skipped"] == 3


def test_ingest_bad_line_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "t1", "time": "2024-05-01 08:00", "role": "user", "text": "hello"}\n'
        '{"id": "t2", "time": "2024-05-01 08:01", "role": "user", "text": \n',
        encoding="utf-8",
    )
    message = cli.fails(2, "ingest", str(bad), "--user", "zed")
    assert f"{bad}:2:" in message
    assert "no user 'zed'" in cli.fails(2, "memory", "list", "--user", "zed")

    # An existing user keeps exactly the turns it had.
    good = jsonl(
        tmp_path / "good.jsonl",
        {"id": "g1", "time": "2024-04-01 08:00", "role": "user", "text": "first"},
    )
    cli.json("ingest", str(good), "--user", "zed")
    bad_role = jsonl(
        tmp_path / "bad_role.jsonl",
        {"id": "t1", "time": "2024-05-01 08:00", "role": "user", "text": "hello"},
        {"id": "t2", "time": "2024-05-01 08:01", "role": "robot", "text": "beep"},
    )
    message = cli.fails(2, "ingest", str(bad_role), "--user", "zed")
    assert f"{bad_role}:2:" in message
    assert "robot" in message
    listed = cli.json("memory", "list", "--user", "zed", "--status", "all")
    assert [m["content"] for m in listed] == ["user: first"]


def test_ingest_missing_image(cli: Cli, tmp_path: Path) -> None:
    chat = jsonl(
        tmp_path / "chat.jsonl",
        {"id": "t1", "time": "2024-05-01 08:00", "role": "user", "text": "look",
         "images": ["missing.png"]},
    )  # fmt: skip
    message = cli.fails(2, "ingest", str(chat), "--user", "mo")
    assert "image file not found" in message
    assert str(tmp_path / "missing.png") in message
    assert "no user 'mo'" in cli.fails(2, "memory", "list", "--user", "mo")


def test_ingest_invalid_utf8(cli: Cli, tmp_path: Path) -> None:
    chat = tmp_path / "latin1.jsonl"
    chat.write_bytes(
        b'{"id": "t1", "time": "2024-05-01 08:00", "role": "user", "text": "ok"}\n'
        b'{"id": "t2", "time": "2024-05-01 08:01", "role": "user", "text": "caf\xe9"}\n'
    )
    message = cli.fails(2, "ingest", str(chat), "--user", "lu")
    assert f"{chat}:2: not valid UTF-8" in message
    assert "no user 'lu'" in cli.fails(2, "memory", "list", "--user", "lu")


def test_ingest_refuses_old_years_and_bad_pictures_writing_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    old = jsonl(
        tmp_path / "old.jsonl",
        {"id": "t1", "time": "2024-05-01 08:00", "role": "user", "text": "fine"},
        {"id": "t2", "time": "0999-05-01 08:01", "role": "user", "text": "too old"},
    )
    message = cli.fails(2, "ingest", str(old), "--user", "vi")
    assert f"{old}:2:" in message and "year 999 is out of range" in message
    (tmp_path / "cut.png").write_bytes(tiny_png(64, 64)[:-40])  # pixel data cut short
    cut = jsonl(
        tmp_path / "cut.jsonl",
        {"id": "t1", "time": "2024-05-01 08:00", "role": "user", "text": "look",
         "images": ["cut.png"]},
    )  # fmt: skip
    message = cli.fails(2, "ingest", str(cut), "--user", "vi")
    assert f"{tmp_path / 'cut.png'} is not a valid PNG picture" in message
    assert "no user 'vi'" in cli.fails(2, "memory", "list", "--user", "vi")
    blobs = cli.db.with_name(cli.db.name + ".blobs")
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


def test_ingest_needs_file_or_sample(cli: Cli) -> None:
    assert "give either a FILE or --sample" in cli.fails(2, "ingest", "--user", "x")


# --------------------------------------------------------------------- errors and exit codes


BEYOND_INT64 = 2**63  # one past the largest id either engine can hold

INPUT_ERRORS = [
    (
        ["memory", "add", "x", "--user", "ann", "--type", "semantic", "--time", "yesterday"],
        "'yesterday' is not a valid time",
    ),
    (["memory", "list", "--user", "ann", "--start", "soon"], "start: 'soon' is not a valid"),
    (["memory", "add", "x", "--user", "ann", "--type", "fact"], "unknown memory type 'fact'"),
    (["memory", "list", "--user", "ann", "--type", "facts"], "unknown memory type 'facts'"),
    (["memory", "list", "--user", "nobody"], "no user 'nobody' in this store"),
    (["memory", "search", "dog", "--user", "nobody"], "no user 'nobody' in this store"),
    (["memory", "get", "999", "--user", "ann"], "no memory 999 for user 'ann'"),
    (["memory", "undo", "999", "--user", "ann"], "no memory event 999 for user 'ann'"),
    (["memory", "add", "", "--user", "ann", "--type", "semantic"], "content: is empty"),
    (["memory", "search", "dog", "--user", "ann", "--exclude", "3,x"], "--exclude takes"),
    (
        ["memory", "update", "1", "--user", "ann", "--content", "Fanta"],
        "cannot update memory 1: it is superseded",
    ),
    *[
        (
            ["memory", verb, str(BEYOND_INT64), "--user", "ann"],
            f"no memory {BEYOND_INT64} for user 'ann' (ids are 1..{BEYOND_INT64 - 1})",
        )
        for verb in ("get", "delete", "history", "timeline", "invalidate")
    ],
    (
        ["memory", "update", str(BEYOND_INT64), "--user", "ann", "--content", "x"],
        f"no memory {BEYOND_INT64} for user 'ann'",
    ),
    (["memory", "get", "0", "--user", "ann"], "no memory 0 for user 'ann'"),
    (
        ["memory", "undo", str(BEYOND_INT64), "--user", "ann"],
        f"no memory event {BEYOND_INT64} for user 'ann'",
    ),
    (
        ["memory", "list", "--user", "ann", "--limit", str(BEYOND_INT64)],
        f"--limit must be in 1..{BEYOND_INT64 - 1}",
    ),
    (
        ["memory", "list", "--user", "ann", "--offset", str(BEYOND_INT64)],
        f"--offset must be in 0..{BEYOND_INT64 - 1}",
    ),
    (
        ["memory", "search", "dog", "--user", "ann", "--exclude", f"3,{BEYOND_INT64}"],
        f"--exclude takes memory ids in 1..{BEYOND_INT64 - 1}",
    ),
    (
        ["memory", "add", "x", "--user", "ann", "--type", "semantic", "--time", "0999-01-01 10:00"],
        "time: year 999 is out of range; times must fall in the years 1000..9999",
    ),
    (
        ["memory", "update", "3", "--user", "ann", "--content", "x", "--time", "0500-01-01 10:00"],
        "year 500 is out of range",
    ),
    (
        ["memory", "invalidate", "3", "--user", "ann", "--time", "0500-01-01 10:00"],
        "year 500 is out of range",
    ),
    (
        ["memory", "list", "--user", "ann", "--start", "0999-01-01 00:00"],
        "start: year 999 is out of range",
    ),
    (
        ["memory", "search", "dog", "--user", "ann", "--end", "0999-01-01 00:00"],
        "end: year 999 is out of range",
    ),
    (
        [
            "personality",
            "record",
            "--user",
            "ann",
            *["-o", "3", "-c", "3", "-e", "3", "-a", "3", "-n", "3"],
            "--time",
            "0999-01-01 10:00",
        ],
        "year 999 is out of range",
    ),
    (
        [
            "memory",
            "list",
            "--user",
            "ann",
            "--start",
            "2024-03-01 00:00",
            "--end",
            "2024-01-01 00:00",
        ],
        "start is after end",
    ),
    (
        [
            "memory",
            "search",
            "dog",
            "--user",
            "ann",
            "--start",
            "2024-03-01 00:00",
            "--end",
            "2024-01-01 00:00",
        ],
        "start is after end",
    ),
]


@pytest.fixture(scope="module")
def input_error_results(ann: Cli) -> dict[str, subprocess.CompletedProcess[str]]:
    results = ann.many(*(tuple(args) for args, _ in INPUT_ERRORS))
    return {" ".join(args): result for (args, _), result in zip(INPUT_ERRORS, results, strict=True)}


@pytest.mark.parametrize(
    ("args", "expected"),
    INPUT_ERRORS,
    ids=[" ".join(args) for args, _ in INPUT_ERRORS],
)
def test_input_errors_exit_2(
    input_error_results: dict[str, subprocess.CompletedProcess[str]],
    args: list[str],
    expected: str,
) -> None:
    result = input_error_results[" ".join(args)]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert expected in error_line(result)


def test_failed_commands_change_nothing(ann: Cli) -> None:
    # Runs after the error cases above: the shared store is as the fixture left it.
    listed = ann.json("memory", "list", "--user", "ann", "--status", "all")
    assert [(m["id"], m["status"]) for m in listed] == [
        (1, "superseded"), (4, "active"), (6, "active"), (3, "active"),
        (2, "active"), (5, "active"), (7, "active"), (8, "active"),
    ]  # fmt: skip


def test_unreachable_postgresql_is_a_store_error_without_the_password(cli: Cli) -> None:
    url = "postgresql://me:secret@127.0.0.1:1/memory"  # port 1: nothing listens there
    result = cli.run("memory", "list", "--user", "ann", "--db", url, db=False)
    assert result.returncode == 4
    line = error_line(result)
    assert "cannot connect to postgresql://me:***@127.0.0.1:1/memory" in line
    assert "secret" not in result.stdout + result.stderr


def test_config_errors_exit_3(cli: Cli, tmp_path: Path) -> None:
    folder = cli.run("memory", "list", "--user", "a", "--db", str(tmp_path), db=False)
    assert folder.returncode == 3
    assert "is a folder" in error_line(folder)
    from_env = cli.fails(3, "memory", "list", "--user", "a", env={"PERSONAVLM_EMBEDDER": "bogus"})
    assert "unknown embedder 'bogus'" in from_env
    assert not cli.db.exists()


def test_store_errors_exit_4(cli: Cli) -> None:
    cli.db.write_bytes(b"not a database at all " * 100)
    message = cli.fails(4, "memory", "list", "--user", "a")
    assert str(cli.db) in message


def test_encoder_mismatch_and_reindex(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, embedder=None)
    chat = jsonl(
        tmp_path / "chat.jsonl",
        {"id": "1", "time": "2024-01-01 10:00", "role": "user", "text": "my beagle is Bobby"},
        {"id": "2", "time": "2024-01-01 10:01", "role": "user", "text": "I drink Coca-Cola"},
    )
    assert cli.json("ingest", str(chat), "--user", "ann", "--embedder", "hashing")["added"] == 2

    message = cli.fails(3, "memory", "search", "dog", "--user", "ann", "--embedder", "hashing-128")
    assert "hashing-256" in message
    assert "hashing-128" in message
    assert "personavlm reindex" in message

    report = cli.json("reindex", "--embedder", "hashing-128")
    assert report == {"reindexed": 2, "encoder": "hashing-128"}
    hits = cli.json("memory", "search", "beagle Bobby", "--user", "ann", "--type", "episodic",
                    "--k", "1", "--embedder", "hashing-128")  # fmt: skip
    assert [h["memory"]["content"] for h in hits] == ["user: my beagle is Bobby"]
    assert hits[0]["ranks"]["dense"] == 1
    # Now the old encoder is the mismatched one.
    assert "personavlm reindex" in cli.fails(
        3, "memory", "list", "--user", "ann", "--embedder", "hashing"
    )


# --------------------------------------------------------------------- bench and help


def test_bench_retrieval_writes_a_report_with_recall_curves(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = cli.json(
        "bench", "retrieval", "--data", str(RETRIEVAL_SMALL), "--embedder", "hashing",
        "--k", "1,5,10", "--out", str(out), db=False,
    )  # fmt: skip
    assert json.loads((out / "report.json").read_text()) == report
    assert "shipped" in (out / "report.md").read_text()
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_retrieval_json(cli: Cli) -> None:
    report = cli.json(
        "bench", "retrieval", "--data", str(RETRIEVAL_SMALL), "--embedder", "hashing",
        "--k", "1,5", db=False,
    )  # fmt: skip
    assert report["format"] == 1
    assert report["encoder"] == "hashing-256"
    assert report["ks"] == [1, 5]
    assert report["questions"] == 24
    assert set(report["variants"]) == {"shipped", "bm25", "dense"}
    for name, variant in report["variants"].items():
        overall = variant["overall"]
        assert set(overall) == {"recall@1", "recall@5", "hit@1", "hit@5"}
        assert all(0.0 <= value <= 1.0 for value in overall.values()), name
        assert overall["recall@5"] >= overall["recall@1"], name
        assert overall["hit@5"] >= overall["hit@1"], name
        assert overall["hit@1"] >= overall["recall@1"], name
        categories = variant["by_category"]
        assert set(categories) == {
            "fact", "multi-hop", "paraphrase", "temporal", "update", "visual",
        }  # fmt: skip
        assert sum(c["questions"] for c in categories.values()) == 24
        for category in categories.values():
            assert 0.0 <= category["recall@1"] <= category["recall@5"] <= 1.0
        assert variant["latency_ms"]["p50"] <= variant["latency_ms"]["p95"]
    # Nothing is left in the home folder or the cwd.
    assert list(cli.home.iterdir()) == []


def test_bench_retrieval_malformed_data(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"conversations": [', encoding="utf-8")
    no_questions = tmp_path / "empty.json"
    no_questions.write_text(
        json.dumps({"conversations": [{"id": "c", "turns": [
            {"id": "t", "time": "2024-01-01 10:00", "speaker": "A", "text": "hi"}]}],
            "questions": []}),
        encoding="utf-8",
    )  # fmt: skip
    bench = ("bench", "retrieval", "--embedder", "hashing", "--data")
    unreadable, empty = cli.many((*bench, str(broken)), (*bench, str(no_questions)), db=False)
    for result in (unreadable, empty):
        assert result.returncode == 2, result.stderr
    assert "cannot read benchmark data" in error_line(unreadable)
    assert f"{no_questions}: no questions" in error_line(empty)


def test_bench_retrieval_honours_personavlm_embedder(cli: Cli, tmp_path: Path) -> None:
    # Honoured, the bogus name fails at once (exit 3); ignored, minilm would be picked and the
    # existing --keep-db would stop the run before any weights load (exit 2).
    existing = tmp_path / "exists.db"
    existing.write_bytes(b"")
    message = cli.fails(
        3, "bench", "retrieval", "--data", str(RETRIEVAL_SMALL), "--keep-db", str(existing),
        db=False, env={"PERSONAVLM_EMBEDDER": "bogus"},
    )  # fmt: skip
    assert "unknown embedder 'bogus'" in message


def test_top_level_help(cli: Cli) -> None:
    text = cli.ok("--help", db=False)
    assert "Example: personavlm ingest --user demo --sample" in text
    for command in ("ingest", "reindex", "memory", "personality", "bench"):
        assert command in text


def test_memory_search_help_has_an_example(cli: Cli) -> None:
    text = cli.ok("memory", "search", "--help", db=False)
    assert 'Example: personavlm memory search --user ann "what is my dog called?" --k 3' in text
    assert "--exclude" in text


# --------------------------------------------------------------------- the real encoder


@pytest.mark.slow
def test_default_encoder_finds_the_dog(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, embedder=None)  # no --embedder, no PERSONAVLM_EMBEDDER
    report = cli.json("ingest", "--user", "demo", "--sample", timeout=600)
    assert (report["added"], report["sessions"]) == (SAMPLE_TURNS, SAMPLE_SESSIONS)
    hits = cli.json("memory", "search", "what is my dog called?", "--user", "demo", timeout=600)
    episodic = [h for h in hits if h["memory"]["type"] == "episodic"][:3]
    assert episodic, hits
    assert any(
        "bobby" in h["memory"]["content"].lower() or "beagle" in h["memory"]["content"].lower()
        for h in episodic
    ), [h["memory"]["content"] for h in episodic]


def test_read_commands_never_create_a_store(cli: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "memroy.db"
    for command in (
        ("memory", "list", "--user", "a"),
        ("reindex",),
        ("personality", "show", "--user", "a"),
    ):
        result = cli.run(*command, "--db", str(typo), db=False)
        assert result.returncode == 3, result.stderr
        assert f"no personavlm store at {typo}" in error_line(result)
    assert not typo.parent.exists()


def test_json_output_has_no_progress_noise(cli: Cli) -> None:
    result = cli.run("ingest", "--user", "ann", "--sample", "--json")
    assert succeeded(result) and result.stderr == ""
    assert json.loads(result.stdout)["added"] == 26
