"""The web page in headless Chromium against the real app: uvicorn on loopback, a SQLite store
in tmp_path, the hashing encoder, and the scripted model server standing in for the model.

A user logs in with their key, sends "My dog is called Bobby" with a picture, reads the answer
and its reasoning, sees the memories it made (the turn's episodic entry with the picture, the
update phase's semantic fact), opens the fact's history and undoes it. An admin picks the user
from the list and watches a background update arrive. A wrong key shows the service's message.
The page, and Swagger UI at /docs, run under their Content-Security-Policy with no refusal.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect

from agent_script import AgentScript, Req, answer, op, retrieve, update
from browser_fixtures import launch_chromium
from personavlm.testing import ScriptedOpenAIServer
from server_fixtures import ADMIN_KEY, make_config, png_bytes, served

pytestmark = pytest.mark.browser

USER = "ann"
PARK = "The user walks in the park every morning."
BOBBY = "The user's dog is called Bobby."
MESSAGE = "My dog is called Bobby"
ANSWER = "Bobby is a lovely name for a dog!"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()  # fresh sessionStorage per test
    opened = context.new_page()
    console_errors: list[str] = []
    opened.on("pageerror", lambda exc: console_errors.append(str(exc)))
    violations = csp_violations(opened)
    yield opened
    context.close()
    # A script error is a bug even when the test's checks happened to pass; so is anything
    # the page tried that its Content-Security-Policy refused (it would be broken in use).
    assert console_errors == []
    assert violations == []


def csp_violations(page: Page) -> list[str]:
    """The Content-Security-Policy refusals Chromium reports on the page's console, as they
    come (the list fills while the page runs)."""
    found: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", note)
    return found


def bobby_respond(req: Req) -> str:
    if req.steps_so_far == 0:
        return retrieve("dog walk park")
    return answer(ANSWER, think="She told me her dog's name.")


def bobby_update(req: Req) -> str:
    if MESSAGE in req.all_text:
        return update(
            [op("ADD", BOBBY, keywords=["dog"], attach_images=True)],
            extraversion=5,
            agreeableness=4,
        )
    return update()


def start_app(
    tmp_path: Path, server: ScriptedOpenAIServer, mode: str
) -> AbstractContextManager[str]:
    """The real app on loopback: SQLite in tmp_path, hashing encoder, the scripted model."""
    model = f"openai:scripted@{server.base_url}"
    return served(make_config(tmp_path, model=model, update=mode))


def api(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def user_with_key(base: str) -> str:
    """Create the user and a seeded memory through the API; return the user's new key."""
    with api(base, ADMIN_KEY) as admin:
        admin.post("/v1/users", json={"id": USER}).raise_for_status()
        made = admin.post(f"/v1/users/{USER}/keys", json={"label": "page test"})
        made.raise_for_status()
        memory = {"type": "semantic", "content": PARK, "time": "2024-03-01 08:00"}
        admin.post(f"/v1/users/{USER}/memories", json=memory).raise_for_status()
    return str(made.json()["key"])


def log_in(page: Page, base: str, key: str) -> None:
    page.goto(base + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()


def memory_item(page: Page, memory_type: str, text: str) -> Locator:
    return page.locator(f"#memories li.memory[data-type={memory_type}]", has_text=text)


# ------------------------------------------------------------------------------ tests


def test_wrong_key_shows_the_service_message(
    page: Page, tmp_path: Path, server: ScriptedOpenAIServer
) -> None:
    with start_app(tmp_path, server, "inline") as base:
        with api(base, "not-a-key") as wrong:
            refused = wrong.get("/v1/me")
        assert refused.status_code == 401
        message = refused.json()["error"]["message"]

        log_in(page, base, "not-a-key")

        expect(page.get_by_role("alert")).to_contain_text(message)
        expect(page.get_by_role("alert")).to_contain_text("unauthorized")
        expect(page.locator("#app")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('personavlm.key')") is None


def test_chat_with_a_picture_then_undo_the_memory(
    page: Page, tmp_path: Path, server: ScriptedOpenAIServer, script: AgentScript
) -> None:
    script.respond = bobby_respond
    script.update = bobby_update
    picture = png_bytes(size=16)
    (tmp_path / "bobby.png").write_bytes(picture)
    with start_app(tmp_path, server, "inline") as base:
        key = user_with_key(base)
        log_in(page, base, key)

        # The header says which model answers: its spec, without the server's address.
        expect(page.locator("#backend")).to_have_text("model: openai:scripted")
        # A user key goes straight to its own user: no users list.
        expect(page.locator("#who")).to_have_text(f"Key of user {USER}")
        expect(page.locator("#users-panel")).to_be_hidden()
        expect(memory_item(page, "semantic", PARK)).to_be_visible()
        expect(page.locator("#personality")).to_contain_text("No personality readings yet")
        expect(page.locator("svg.radar")).to_have_count(0)

        page.get_by_label("Message").fill(MESSAGE)
        page.get_by_label("Picture (optional)").set_input_files(str(tmp_path / "bobby.png"))
        page.get_by_role("button", name="Send").click()

        exchange = page.locator("#chat-log .exchange").last
        expect(exchange.locator(".answer")).to_have_text(ANSWER)
        check_reasoning(page)
        # The picture reached the model as the data URL of the very bytes picked.
        sent = [url for kind, req in script.seen if kind == "respond" for url in req.images()]
        assert sent, "the model was never shown the picture"
        assert base64.b64decode(sent[0].split(",", 1)[1]) == picture

        check_new_memories(page, picture)
        check_personality(page, base, key)
        undo_the_fact(page, base, key)


def check_reasoning(page: Page) -> None:
    steps = page.locator("#chat-log .exchange .step")
    kinds = [s.get_attribute("data-kind") for s in steps.all()]
    assert "retrieve" in kinds and kinds[-1] == "answer", kinds
    retrieval = page.locator(".step-retrieve")
    expect(retrieval).to_contain_text('"dog walk park"')
    # The seeded memory was found, with its score.
    hit = retrieval.locator(".hit", has_text=PARK)
    expect(hit).to_be_visible()
    expect(hit.locator(".score")).to_contain_text("score 0.")
    expect(page.locator(".step-answer")).to_contain_text(ANSWER)
    expect(page.locator(".update[data-status=applied]")).to_contain_text("add semantic")
    expect(page.locator(".update .change-add")).to_contain_text(BOBBY)


def check_new_memories(page: Page, picture: bytes) -> None:
    fact = memory_item(page, "semantic", BOBBY)
    expect(fact).to_be_visible()
    expect(fact.locator(".memory-head .status")).to_have_text("active")
    turn = memory_item(page, "episodic", MESSAGE)
    expect(turn).to_be_visible()
    # The picture is fetched with the key and really decodes (the 16 x 16 PNG sent).
    for item in (fact, turn):
        expect(item.locator("img")).to_have_js_property("naturalWidth", 16)


def check_personality(page: Page, base: str, key: str) -> None:
    with api(base, key) as client:
        current = client.get(f"/v1/users/{USER}/personality").json()["current"]["traits"]
    assert current["extraversion"] > 3  # the reading (extraversion 5) moved the estimate
    radar = page.locator("#personality svg.radar")
    expect(radar).to_be_visible()
    expect(radar.locator("line.axis")).to_have_count(5)
    point = radar.locator("circle.value-point[data-trait=extraversion] title")
    expect(point).to_have_text(f"extraversion: {current['extraversion']:.2f}")
    trajectory = page.locator("#personality svg.trajectory")
    expect(trajectory.locator("g.trait-line")).to_have_count(5)


def undo_the_fact(page: Page, base: str, key: str) -> None:
    fact = memory_item(page, "semantic", BOBBY)
    memory_id = fact.get_attribute("data-memory-id")
    fact.get_by_role("button", name="History").click()
    event = fact.locator(".events .event[data-op=add]")
    expect(event).to_contain_text("by agent")
    expect(fact.locator(".versions .version-item")).to_have_count(1)

    event.get_by_role("button", name="Undo event").click()

    expect(page.locator("#notice")).to_contain_text("undone")
    expect(memory_item(page, "semantic", BOBBY)).to_have_count(0)
    expect(memory_item(page, "semantic", PARK)).to_be_visible()  # the rest stays
    page.get_by_label("Status").select_option("any")
    gone = memory_item(page, "semantic", BOBBY)
    expect(gone.locator(".memory-head .status")).to_have_text("deleted")
    # The history stayed open across the refresh and now ends with the undo.
    expect(gone.locator(".events .event").last).to_have_attribute("data-op", "undo")
    with api(base, key) as client:
        stored = client.get(f"/v1/users/{USER}/memories/{memory_id}").json()
    assert stored["status"] == "deleted"


def test_type_tabs_status_filter_and_more_pages(
    page: Page, tmp_path: Path, server: ScriptedOpenAIServer
) -> None:
    with start_app(tmp_path, server, "inline") as base:
        key = user_with_key(base)  # one semantic memory (PARK)
        with api(base, key) as client:
            for day in range(1, 56):  # 55 more: the page shows 50 at a time
                fact = {
                    "type": "semantic",
                    "content": f"Fact {day}",
                    "time": f"2024-04-{day % 28 + 1:02d} 09:00",
                }
                client.post(f"/v1/users/{USER}/memories", json=fact).raise_for_status()
            core = {"type": "core", "content": "Ann", "key": "name", "time": "2024-01-01 00:00"}
            client.post(f"/v1/users/{USER}/memories", json=core).raise_for_status()
        log_in(page, base, key)

        items = page.locator("#memories li.memory")
        expect(items).to_have_count(50)
        page.get_by_role("button", name="More").click()
        expect(items).to_have_count(57)
        expect(page.get_by_role("button", name="More")).to_be_hidden()
        # Newest event first: the core memory of January closes the list.
        expect(items.last).to_have_attribute("data-type", "core")
        expect(items.first).to_have_attribute("data-type", "semantic")

        page.get_by_role("tab", name="Core").click()
        expect(page.get_by_role("tab", name="Core")).to_have_attribute("aria-selected", "true")
        expect(items).to_have_count(1)
        expect(items.first.locator(".key")).to_have_text("key name")
        page.get_by_role("tab", name="Semantic").click()
        expect(items).to_have_count(50)
        expect(page.locator("#memories li.memory[data-type=core]")).to_have_count(0)


def test_admin_picks_the_user_and_sees_a_background_update_arrive(
    page: Page, tmp_path: Path, server: ScriptedOpenAIServer, script: AgentScript
) -> None:
    release = threading.Event()

    def held_update(req: Req) -> str:
        # Hold the background update until the page has shown the reply without it.
        if not release.wait(20):
            raise AssertionError("the test never released the update")
        return bobby_update(req)

    script.respond = bobby_respond
    script.update = held_update
    with start_app(tmp_path, server, "background") as base:
        try:
            watch_the_background_update(page, base, release)
        finally:
            release.set()  # never leave the worker waiting, even when a check failed


def watch_the_background_update(page: Page, base: str, release: threading.Event) -> None:
    user_with_key(base)
    log_in(page, base, ADMIN_KEY)

    expect(page.locator("#who")).to_have_text("Admin key")
    page.get_by_role("button", name=USER).click()
    expect(page.locator("#user-title")).to_have_text(f"User {USER}")
    page.get_by_label("Message").fill(MESSAGE)
    page.get_by_role("button", name="Send").click()

    expect(page.locator("#chat-log .answer")).to_have_text(ANSWER)
    expect(page.locator(".update[data-status=queued]")).to_be_visible()
    expect(memory_item(page, "episodic", MESSAGE)).to_be_visible()  # stored at once
    expect(memory_item(page, "semantic", BOBBY)).to_have_count(0)
    expect(page.locator("#notice")).to_contain_text("background")

    release.set()

    # No click: the page polls until the update's reading and memory are in.
    expect(memory_item(page, "semantic", BOBBY)).to_be_visible(timeout=15_000)
    expect(page.locator("#notice")).to_have_text("The memory update is done.")
    expect(page.locator("#personality svg.radar line.axis")).to_have_count(5)


def test_the_policy_refuses_what_the_page_does_not_need(browser: Browser, tmp_path: Path) -> None:
    """The violation check above sees refusals: a picture from another origin is one."""
    context = browser.new_context()
    opened = context.new_page()
    violations = csp_violations(opened)
    try:
        with served(make_config(tmp_path)) as base:
            opened.goto(base + "/")
            assert violations == []
            refused = "Content Security Policy"
            with opened.expect_console_message(lambda message: refused in message.text):
                opened.evaluate(
                    "() => { const img = new Image(); img.src = 'https://example.invalid/x.png';"
                    " document.body.append(img); }"
                )
    finally:
        context.close()
    assert len(violations) == 1 and "img-src" in violations[0], violations


def test_docs_render_offline_under_their_policy(page: Page, tmp_path: Path) -> None:
    """Swagger UI at /docs: its files come from this server and its start-up script runs
    under /docs' own policy (the page fixture fails on any CSP refusal)."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    with served(make_config(tmp_path)) as base:
        page.goto(base + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("personavlm")
        memories = page.locator(".opblock-summary-path[data-path='/v1/users/{user_id}/memories']")
        expect(memories.first).to_be_visible()
    fetched = [url for url in asked if not url.startswith(("data:", "blob:"))]
    assert fetched and all(url.startswith(base + "/") for url in fetched), fetched


def test_a_dead_update_is_shown_with_its_replies_and_can_be_retried_or_dropped(
    page: Page, tmp_path: Path, server: ScriptedOpenAIServer, script: AgentScript
) -> None:
    broken = "Sorry, no JSON from me today."
    script.update = lambda req: broken if "poison" in req.all_text else update()
    with start_app(tmp_path, server, "inline") as base:
        key = user_with_key(base)
        with api(base, key) as client:
            for text in ("poison pill", "hello", "hello again"):  # three strikes: dead
                body = {"user": USER, "messages": [{"role": "user", "content": text}]}
                client.post("/v1/chat/completions", json=body).raise_for_status()
        log_in(page, base, key)

        jobs = page.locator("#dead-jobs li.job")
        expect(jobs).to_have_count(1)
        expect(jobs.first).to_contain_text("failed 3 times")
        jobs.first.locator("summary").click()
        expect(jobs.first.locator("pre").first).to_have_text(broken)
        jobs.first.get_by_role("button", name="Drop").click()
        expect(page.locator("#notice")).to_contain_text("dropped")
        expect(page.locator("#jobs-panel")).to_be_hidden()
        with api(base, key) as client:
            events = client.get(f"/v1/users/{USER}/export").json()["events"]
        assert [e["op"] for e in events].count("skip") == 1
