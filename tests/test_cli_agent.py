"""The agent's commands end to end: `personavlm chat`, `worker`, `status` and
`ingest --format persona-mme`, run as real subprocesses against a real SQLite store and a
scripted OpenAI-compatible server on loopback (the real HTTP client, its errors and retries).

The scripted model tells the agent's calls apart by their system prompt (agent/prompts/*.txt)
and answers in the json protocol's shapes (agent/formats.py, agent/protocol.py).
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import write_png
from personavlm.errors import ConfigError
from personavlm.settings import api_key, model_spec
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse

EXE = Path(sys.executable).with_name("personavlm")

RESPOND = "You are a long-term personal assistant"
UPDATE = "You maintain the long-term memory"
EPISODIC = "You summarise a finished conversation"
CONSOLIDATE = "A conversation session between a user and their assistant has ended"
TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


# --------------------------------------------------------------------- settings at the edge


def test_model_spec_flag_beats_environment() -> None:
    env = {"PERSONAVLM_MODEL": "openai:env@http://env/v1"}
    assert model_spec("openai:flag@http://flag/v1", env) == "openai:flag@http://flag/v1"
    assert model_spec(None, env) == "openai:env@http://env/v1"
    assert model_spec("", env) == "openai:env@http://env/v1"


def test_model_spec_defaults_to_the_bundled_model_and_none_says_what_to_pass() -> None:
    for env in ({}, {"PERSONAVLM_MODEL": "  "}):
        assert model_spec(None, env) == "local:smollm2"
    for flag, env in (("none", {}), (None, {"PERSONAVLM_MODEL": "none"})):
        with pytest.raises(ConfigError) as caught:
            model_spec(flag, env)
        message = str(caught.value)
        assert "--model openai:<model>@<base_url>" in message
        assert "hf:<path>" in message and "local:smollm2" in message
        assert "PERSONAVLM_MODEL" in message


def test_api_key_order() -> None:
    assert api_key({}) is None
    assert api_key({"OPENAI_API_KEY": "sk-openai"}) == "sk-openai"
    both = {"PERSONAVLM_API_KEY": "sk-pv", "OPENAI_API_KEY": "sk-openai"}
    assert api_key(both) == "sk-pv"
    assert api_key({"PERSONAVLM_API_KEY": "", "OPENAI_API_KEY": "sk-openai"}) == "sk-openai"


# --------------------------------------------------------------------- the scripted model


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part["type"] == "text")


def _step(action: str, **fields: str | None) -> str:
    step: dict[str, str | None] = {
        "think": f"I will {action}.",
        "action": action,
        "answer": None,
        "keywords": None,
        "start_time": None,
        "end_time": None,
    }
    return json.dumps(step | fields)


@dataclass
class Model:
    """Answers each agent call by its system prompt; `fail_updates` makes the per-turn
    update fail with HTTP 400 (not retried by the client), as a broken model server would."""

    fail_updates: bool = False
    calls: list[str] = field(default_factory=list)

    def __call__(self, request: dict[str, Any]) -> str | ScriptedResponse:
        messages = request["messages"]
        system = _text(messages[0])
        text = "\n".join(_text(m) for m in messages)
        if system.startswith(RESPOND):
            self.calls.append("respond")
            return self._respond(messages)
        if system.startswith(UPDATE):
            self.calls.append("update")
            if self.fail_updates:
                return ScriptedResponse(
                    status=400, body={"error": {"message": "the update model is down"}}
                )
            return self._update(text.split("## The exchange", 1)[-1])
        if system.startswith(EPISODIC):
            self.calls.append("episodic")
            topic = {"summary": "The user talked about their dog.", "keywords": ["dog"]}
            return json.dumps({"topics": [topic | {"turns": [0]}]})
        if system.startswith(CONSOLIDATE):
            self.calls.append("consolidate")
            return json.dumps({"core": [{"key": "name", "value": "Ann"}], "procedural": []})
        raise AssertionError(f"unexpected call: {system[:80]!r}")

    @staticmethod
    def _respond(messages: list[dict[str, Any]]) -> str | ScriptedResponse:
        if "break the server" in _text(messages[1]):
            return ScriptedResponse(status=400, body={"error": {"message": "model crashed"}})
        query = _text(messages[1]).rsplit("What is my dog called", 1)
        retrieved = any(m["role"] == "assistant" for m in messages)
        if len(query) == 2 and not retrieved:
            return _step("retrieve", keywords="dog Bobby name")
        return _step("answer", answer="Your dog is Bobby." if retrieved else "Nice!")

    @staticmethod
    def _update(exchange: str) -> str:
        ops = []
        if "My dog is called Bobby" in exchange:
            ops.append(
                {
                    "op": "ADD",
                    "id": None,
                    "content": "The user's dog is called Bobby.",
                    "keywords": ["dog", "Bobby"],
                    "attach_images": True,
                }
            )
        return json.dumps({"personality": dict.fromkeys(TRAITS, 4), "operations": ops})


@pytest.fixture
def model() -> Model:
    return Model()


@pytest.fixture
def server(model: Model) -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(model) as running:
        yield running


# --------------------------------------------------------------------- running the CLI


@dataclass(frozen=True)
class Cli:
    root: Path
    spec: str  # --model

    @property
    def db(self) -> Path:
        return self.root / "memory.db"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PERSONAVLM_") and k != "OPENAI_API_KEY"
        }
        return env | {
            "PERSONAVLM_HOME": str(self.root / "home"),
            "PERSONAVLM_EMBEDDER": "hashing",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    def argv(self, *args: str, model: bool = True) -> list[str]:
        return [
            str(EXE),
            *args,
            "--db",
            str(self.db),
            *(["--model", self.spec] if model else []),
        ]

    def run(
        self, *args: str, stdin: str = "", model: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args, model=model),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, **kwargs: Any) -> str:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs))

    def lines(self, *args: str, **kwargs: Any) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.ok(*args, "--json", **kwargs).splitlines()]

    def fails(self, code: int, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **kwargs)
        assert result.returncode == code, (
            f"{args}: expected exit {code}, got {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def memories(self, user: str, *types: str) -> list[dict[str, Any]]:
        type_args = [a for t in types for a in ("--type", t)]
        listed: list[dict[str, Any]] = self.json(
            "memory", "list", "--user", user, *type_args, "--limit", "1000", model=False
        )
        return listed


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def cli(tmp_path: Path, server: ScriptedOpenAIServer) -> Cli:
    (tmp_path / "home").mkdir()
    return Cli(tmp_path, f"openai:test@{server.base_url}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------- chat


def dog_script(photo: Path) -> str:
    return (
        "/time 2024-03-05 14:30\n"
        f"/image {photo}\n"
        "My dog is called Bobby, look at him\n"
        "\n"
        "/time 2024-03-05 14:40\n"
        "What is my dog called?\n"
        "/close\n"
    )


def test_chat_script_json(cli: Cli, server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    photo = write_png(tmp_path / "bobby.png")
    first, second, closed = cli.lines("chat", "--user", "ann", stdin=dog_script(photo))

    assert first["answer"] == "Nice!"
    assert first["time"] == "2024-03-05 14:30:00"
    assert first["trace"]["protocol"] == "json"
    [turn_update] = first["trace"]["updates"]
    assert turn_update["status"] == "applied"
    assert [(c["op"], c["memory_type"]) for c in turn_update["changes"]] == [("add", "semantic")]
    bobby_id = turn_update["changes"][0]["memory_id"]
    # The photo went to the model with the message it came with.
    assert any(
        part.get("type") == "image_url"
        for part in server.requests[0]["messages"][1]["content"]
        if isinstance(part, dict)
    )

    assert second["answer"] == "Your dog is Bobby."
    assert second["time"] == "2024-03-05 14:40:00"
    kinds = [step["kind"] for step in second["trace"]["steps"]]
    assert kinds == ["think", "retrieve", "think", "answer"]
    retrieve = second["trace"]["steps"][1]
    assert retrieve["keywords"] == "dog Bobby name"
    assert bobby_id in [hit["memory_id"] for hit in retrieve["hits"]]

    assert closed["closed"] is True
    [session] = closed["updates"]
    assert (session["kind"], session["status"]) == ("session", "applied")
    assert {(c["op"], c["memory_type"]) for c in session["changes"]} == {
        ("add", "episodic"),
        ("add", "core"),
    }

    [semantic] = cli.memories("ann", "semantic")
    assert semantic["content"] == "The user's dog is called Bobby."
    assert semantic["image_ids"]
    [core] = cli.memories("ann", "core")
    assert (core["key"], core["content"]) == ("name", "Ann")


def test_chat_script_text(cli: Cli, tmp_path: Path) -> None:
    photo = write_png(tmp_path / "bobby.png")
    out = cli.ok("chat", "--user", "ann", stdin=dog_script(photo))
    lines = out.splitlines()
    assert "assistant> Nice!" in lines
    assert "assistant> Your dog is Bobby." in lines
    assert "retrieve 'dog Bobby name'  window: any time" in lines
    assert re.search(
        r"^    #\d+ semantic 2024-03-05 14:30:00  The user's dog is called Bobby\.$", out, re.M
    )
    assert re.search(r"^update turn job \d+: applied$", out, re.M)
    assert re.search(r"^    add semantic #\d+: The user's dog is called Bobby\.$", out, re.M)
    assert "    personality: openness " in out
    assert "session closed" in lines
    assert re.search(r"^    add core #\d+: name: Ann$", out, re.M)
    assert "\x1b[" not in out  # no colour codes in a pipe


@pytest.mark.parametrize(
    ("script", "line", "message"),
    [
        ("/frobnicate\nhello\n", 1, "unknown command '/frobnicate'"),
        ("/time yesterday\nhello\n", 1, "/time: 'yesterday' is not a valid time"),
        ("/image missing.png\nhello\n", 1, "/image: no image file at missing.png"),
        ("/close now\n", 1, "/close takes no argument"),
        ("\n/time 2024-03-05 14:30\n", 2, "waits for a message, but none follows"),
    ],
)
def test_chat_bad_lines_exit_2(cli: Cli, script: str, line: int, message: str) -> None:
    result = cli.fails(2, "chat", "--user", "ann", stdin=script)
    error = error_line(result)
    assert error.startswith(f"error: line {line}: "), error
    assert message in error
    assert result.stdout == ""


def test_chat_bad_line_after_answers_keeps_them(cli: Cli, model: Model) -> None:
    script = "/time 2024-03-05 14:30\nhello\n/time 2024-03-05 14:00\nbefore that\n"
    result = cli.fails(2, "chat", "--user", "ann", "--json", stdin=script)
    assert "error: line 4: " in error_line(result)
    assert "conversation time only moves forward" in error_line(result)
    [answered] = [json.loads(line) for line in result.stdout.splitlines()]
    assert answered["answer"] == "Nice!"
    turns = cli.memories("ann", "episodic")
    assert [t["content"] for t in turns] == ["user: hello", "assistant: Nice!"]


def test_chat_image_that_is_no_image(cli: Cli) -> None:
    (cli.root / "notes.txt").write_text("not a picture", encoding="utf-8")
    result = cli.fails(2, "chat", "--user", "ann", stdin="/image notes.txt\nlook\n")
    assert error_line(result).startswith("error: line 2: ")


def test_chat_model_error_mid_chat_exits_5_keeping_answered_turns(cli: Cli) -> None:
    script = "/time 2024-03-05 14:30\nhello\nplease break the server\nnever sent\n"
    result = cli.fails(5, "chat", "--user", "ann", "--json", stdin=script)
    error = error_line(result)
    assert error.startswith("error: line 3: ")
    assert "model crashed" in error
    [answered] = [json.loads(line) for line in result.stdout.splitlines()]
    assert answered["answer"] == "Nice!"
    turns = cli.memories("ann", "episodic")
    # the message the model failed on is kept too (a failed turn), never lost
    assert [t["content"] for t in turns] == [
        "user: hello",
        "assistant: Nice!",
        "user: please break the server",
    ]


def test_chat_with_no_model_server_exits_5(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    cli = Cli(tmp_path, f"openai:test@http://127.0.0.1:{free_port()}/v1")
    result = cli.fails(5, "chat", "--user", "ann", stdin="hello\n")
    error = error_line(result)
    assert error.startswith("error: line 1: ")
    assert "127.0.0.1" in error


def test_chat_with_model_none_is_a_config_error(cli: Cli) -> None:
    result = cli.fails(3, "chat", "--user", "ann", "--model", "none", stdin="hello\n", model=False)
    assert "--model openai:<model>@<base_url>" in error_line(result)
    assert not cli.db.exists()


def test_chat_background_reports_pending(cli: Cli) -> None:
    script = "/time 2024-03-05 14:30\nhello\n"
    result = cli.run("chat", "--user", "ann", "--update", "background", "--json", stdin=script)
    assert result.returncode == 0, result.stderr
    [answered] = [json.loads(line) for line in result.stdout.splitlines()]
    assert answered["trace"]["updates"][0]["status"] == "queued"
    assert re.search(r"^\d+ update\(s\) still pending for 'ann'", result.stderr, re.M)


def test_chat_interactive_prompt(cli: Cli) -> None:
    """At a terminal: a prompt; a typo is reported and the chat goes on."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.argv("chat", "--user", "ann"),
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env(),
            cwd=cli.root,
        )
        os.write(leader, b"/time 2024-03-05 14:30\n/nope\nhello\n/quit\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 0, err
    assert out.startswith("chatting as 'ann' with openai:test@")
    assert "(next message at 2024-03-05 14:30 (Tuesday))" in out
    assert "error: unknown command '/nope'" in err
    assert "assistant> Nice!" in out


# --------------------------------------------------------------------- status and worker


def test_failed_updates_show_in_status_and_worker_applies_them(cli: Cli, model: Model) -> None:
    model.fail_updates = True
    result = cli.run(
        "chat", "--user", "ann", stdin="/time 2024-03-05 14:30\nMy dog is called Bobby\n"
    )
    assert result.returncode == 0, result.stderr
    assert "update turn job 1: failed (ModelResponseError: " in result.stdout
    assert "1 update(s) still pending for 'ann', 1 failed" in result.stdout

    status = cli.json("status", "--user", "ann", model=False)
    assert (status["pending"], status["failed"], status["done"], status["users"]) == (1, 1, 0, 1)
    [failure] = status["failures"]
    assert (failure["job_id"], failure["user_id"]) == (1, "ann")
    assert "the update model is down" in failure["error"]
    assert status["user"]["memories"] == {"core": 0, "semantic": 0, "episodic": 2, "procedural": 0}
    text = cli.ok("status", model=False)
    assert "update queue: 1 pending (1 failed), 0 done" in text
    assert "failed job 1 (user 'ann'): ModelResponseError: " in text

    model.fail_updates = False
    [report] = cli.lines("worker", "--once")
    assert (report["job_id"], report["status"]) == (1, "applied")
    assert report["changes"][0]["op"] == "add"

    status = cli.json("status", "--user", "ann", model=False)
    assert (status["pending"], status["failed"], status["done"]) == (0, 0, 1)
    assert status["user"]["memories"]["semantic"] == 1
    assert status["user"]["personality"]["openness"] > 3
    assert "0 job(s) run; 0 pending, 0 failed" in cli.ok("worker", "--once", "--user", "ann")


def test_status_of_unknown_user_and_missing_store(cli: Cli) -> None:
    missing = cli.fails(3, "status", model=False)
    assert "no personavlm store" in error_line(missing)
    cli.ok("chat", "--user", "ann", stdin="/time 2024-03-05 14:30\nhello\n")
    ghost = cli.fails(2, "status", "--user", "ghost", model=False)
    assert "no user 'ghost'" in error_line(ghost)
    assert "no user 'ghost'" in error_line(cli.fails(2, "worker", "--once", "--user", "ghost"))


@pytest.mark.slow
def test_worker_serves_until_sigterm(cli: Cli, model: Model) -> None:
    model.fail_updates = True
    cli.ok("chat", "--user", "ann", stdin="/time 2024-03-05 14:30\nMy dog is called Bobby\n")
    model.fail_updates = False
    proc = subprocess.Popen(
        cli.argv("worker", "--poll", "0.2", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env(),
        cwd=cli.root,
    )
    try:
        assert proc.stdout is not None
        # The failed job's backoff is 5 s: the serving worker waits it out, then applies it.
        report = json.loads(proc.stdout.readline())
        assert (report["job_id"], report["status"]) == (1, "applied")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping after the job in hand" in err


# --------------------------------------------------------------------- persona-mme ingest


def write_history(folder: Path) -> Path:
    """Two sessions (the second 2 hours after the first) and one photo."""
    folder.mkdir()
    write_png(folder / "bobby.png")
    history = {
        "profile": {"name": "Ann"},
        "sessions": [
            [
                {
                    "time": "2024-03-05 14:30",
                    "user": "My dog is called Bobby <img>",
                    "assistant": "What a lovely dog!",
                },
                {"time": "2024-03-05 14:35", "user": "He is a beagle.", "assistant": "Nice."},
            ],
            [{"time": "2024-03-05 16:40", "user": "Good evening", "assistant": "Hello Ann!"}],
        ],
        "imgs": ["bobby.png"],
    }
    path = folder / "u001.json"
    path.write_text(json.dumps(history), encoding="utf-8")
    return path


def test_ingest_persona_mme_is_idempotent(cli: Cli, model: Model, tmp_path: Path) -> None:
    history = write_history(tmp_path / "data")
    args = ("ingest", "--format", "persona-mme", str(history), "--user", "u001")
    report = cli.json(*args)
    assert (report["added"], report["skipped"]) == (3, 0)
    # three turn updates, two session closes (the 2-hour gap, then the end)
    assert report["updates"] == {"applied": 5, "failed": 0, "pending": 0}
    # semantic Bobby, two episodes; the core name came from the profile before the replay
    assert report["profile_keys"] == 1
    assert report["changes"]["add"] >= 3
    assert model.calls.count("episodic") == 2

    [semantic] = cli.memories("u001", "semantic")
    assert semantic["content"] == "The user's dog is called Bobby."
    assert len(semantic["image_ids"]) == 1
    [core] = cli.memories("u001", "core")
    assert (core["key"], core["content"]) == ("name", "Ann")
    before = cli.memories("u001")
    assert len([m for m in before if m["content"].startswith("The user talked")]) == 2

    calls = len(model.calls)
    again = cli.json(*args)
    assert (again["added"], again["skipped"]) == (0, 3)
    assert again["updates"] == {"applied": 0, "failed": 0, "pending": 0}
    assert cli.memories("u001") == before
    assert len(model.calls) == calls

    text = cli.ok(*args)
    assert "0 turns added, 3 already stored; 0 updates applied, 0 failed" in text


def test_ingest_persona_mme_with_model_down_continues(
    cli: Cli, model: Model, tmp_path: Path
) -> None:
    history = write_history(tmp_path / "data")
    model.fail_updates = True
    args = ("ingest", "--format", "persona-mme", str(history), "--user", "u001")
    out = cli.ok(*args)
    # The server refuses the first update's request (HTTP 400: the request's fault, not an
    # outage): each exchange's inline drain tries it again, and the third strike makes it
    # dead, so the user's later updates are no longer stuck behind it.
    assert "3 turns added, 0 already stored; 0 updates applied, 1 failed" in out
    assert "4 update(s) stay queued (first error: job 2: ModelResponseError: " in out
    assert "run `personavlm worker --user u001` when the model is back" in out
    assert len(cli.memories("u001", "episodic")) == 6  # every turn is stored and searchable
    status = cli.json("status", model=False)
    assert status["dead"] == 1 and status["dead_jobs"][0]["job_id"] == 1

    model.fail_updates = False
    reports = cli.lines("worker", "--once", "--user", "u001")
    assert [r["status"] for r in reports] == ["applied"] * 4
    assert cli.ok("jobs", "retry", "1", "--user", "u001", model=False)
    reports = cli.lines("worker", "--once", "--user", "u001")
    assert [r["status"] for r in reports] == ["applied"]
    assert cli.json("status", model=False)["pending"] == 0


def test_ingest_format_flags(cli: Cli, tmp_path: Path) -> None:
    history = write_history(tmp_path / "data")
    no_model = cli.fails(
        3, "ingest", "--format", "persona-mme", str(history), "--user", "u", "--model", "none",
        model=False,
    )  # fmt: skip
    assert "--model openai:<model>@<base_url>" in error_line(no_model)
    jsonl_with_model = cli.fails(2, "ingest", str(history), "--user", "u")
    assert "apply to --format persona-mme" in error_line(jsonl_with_model)
    broken = tmp_path / "broken.json"
    broken.write_text('{"sessions": []}', encoding="utf-8")
    bad = cli.fails(2, "ingest", "--format", "persona-mme", str(broken), "--user", "u")
    assert "'sessions' is empty" in error_line(bad)
    assert not cli.db.exists()  # a bad history creates no store


def test_agent_commands_have_examples(cli: Cli) -> None:
    for command in ("chat", "worker", "status", "ingest"):
        result = subprocess.run(
            [str(EXE), command, "--help"],
            capture_output=True,
            text=True,
            env=cli.env(),
            check=True,
        )
        assert "Example: personavlm " in result.stdout, command
