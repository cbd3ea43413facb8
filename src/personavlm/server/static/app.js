// The personavlm page: log in with a key, pick a user (admin key) or get your own (user key),
// then chat, browse and undo memory, and watch the personality. Every failure the service
// reports is shown in the alert box with its message (docs/service.md, "The web page").

import { Api, userPath } from "./api.js";
import { radar, trajectory, legend } from "./charts.js";
import { ChatPanel } from "./chat.js";
import { $, el } from "./dom.js";
import { JobsPanel } from "./jobs.js";
import { MemoryTimeline } from "./memories.js";

const KEY_STORAGE = "personavlm.key";
// Background update: poll the personality once a second, up to this many times, for the
// reading of the new turn (the update writes it with its memories in one transaction).
const UPDATE_POLLS = 30;
const POLL_INTERVAL_MS = 1000;

const page = {
  api: null,
  me: null,
  userId: null,
  run,
  report,
  notify,
  onReply,
};

const timeline = new MemoryTimeline(
  {
    list: $("#memories"),
    more: $("#more"),
    tabs: [...document.querySelectorAll("#type-tabs [role=tab]")],
    status: $("#status-filter"),
  },
  page,
);
const jobs = new JobsPanel({ section: $("#jobs-panel"), list: $("#dead-jobs") }, page);
const chat = new ChatPanel(
  {
    form: $("#chat-form"),
    text: $("#chat-text"),
    image: $("#chat-image"),
    preview: $("#chat-preview"),
    send: $("#chat-send"),
    log: $("#chat-log"),
  },
  page,
);

// ------------------------------------------------------------------ messages

async function run(action) {
  clearError();
  try {
    await action();
  } catch (err) {
    report(err);
  }
}

function report(err) {
  const box = $("#error");
  const code = err.code ? ` (${err.code})` : "";
  box.replaceChildren(el("strong", { text: `Error${code}: ` }), err.message);
  box.hidden = false;
  console.error(err);
}

function clearError() {
  $("#error").hidden = true;
  $("#error").replaceChildren();
}

function notify(text) {
  $("#notice").textContent = text;
}

// --------------------------------------------------------------------- login

async function login(key) {
  const api = new Api(key);
  const me = await api.get("/v1/me");
  sessionStorage.setItem(KEY_STORAGE, key);
  Object.assign(page, { api, me, userId: null });
  $("#login-form").hidden = true;
  $("#session").hidden = false;
  $("#who").textContent = me.admin ? "Admin key" : `Key of user ${me.user_id}`;
  $("#app").hidden = false;
  $("#users-panel").hidden = !me.admin;
  if (me.admin) {
    await loadUsers();
  } else {
    await selectUser(me.user_id);
  }
}

function logout() {
  sessionStorage.removeItem(KEY_STORAGE);
  Object.assign(page, { api: null, me: null, userId: null });
  $("#login-form").hidden = false;
  $("#session").hidden = true;
  $("#app").hidden = true;
  $("#user-view").hidden = true;
  $("#key-input").value = "";
  notify("Logged out.");
}

// --------------------------------------------------------------------- users

async function loadUsers() {
  const users = await page.api.get("/v1/users");
  const list = $("#users");
  list.replaceChildren(...users.data.map(userItem));
  if (!users.data.length) {
    const hint = "No users yet: create one with POST /v1/users.";
    list.append(el("li", { class: "empty", text: hint }));
  }
}

function userItem(user) {
  const counts = Object.entries(user.memories)
    .filter(([, n]) => n > 0)
    .map(([type, n]) => `${type} ${n}`)
    .join(", ");
  const button = el(
    "button",
    { type: "button", class: "user", "data-user-id": user.id },
    el("span", { class: "user-id", text: user.id }),
    el("span", { class: "note", text: counts ? ` (${counts})` : " (no memories)" }),
  );
  if (user.id === page.userId) button.setAttribute("aria-current", "true");
  button.addEventListener("click", () => run(() => selectUser(user.id)));
  return el("li", {}, button);
}

async function selectUser(userId) {
  page.userId = userId;
  for (const button of document.querySelectorAll("#users button.user")) {
    button.toggleAttribute("aria-current", button.dataset.userId === userId);
  }
  $("#user-title").textContent = `User ${userId}`;
  $("#user-view").hidden = false;
  chat.show(userId);
  await Promise.all([timeline.show(userId), refreshPersonality(), jobs.show(userId)]);
}

// --------------------------------------------------------------- personality

async function refreshPersonality() {
  const userId = page.userId;
  const data = await page.api.get(`${userPath(userId)}/personality`);
  if (userId !== page.userId) return data; // the user changed while this was loading
  const readings = data.trajectory;
  const box = $("#personality");
  if (!readings.length) {
    box.replaceChildren(
      el("p", {
        class: "empty",
        text:
          "No personality readings yet: the estimate stays neutral (3) " +
          "until a message is analysed.",
      }),
    );
    return data;
  }
  box.replaceChildren(
    el("p", {
      text: `Current estimate (${data.current.step} of ${readings.length} readings absorbed):`,
    }),
    radar(data.current.traits),
    el("h3", { text: "Over time" }),
    trajectory(readings),
    legend(),
  );
  return data;
}

// --------------------------------------------------------------------- replies

async function onReply(reply) {
  const updates = reply.personavlm?.trace?.updates ?? [];
  await Promise.all([
    timeline.reload(),
    refreshPersonality(),
    jobs.reload(),
    page.me.admin ? loadUsers() : null,
  ]);
  if (updates.some((u) => u.status === "queued")) {
    notify("The memory update runs in the background; the views refresh when it is done.");
    // Not awaited: the chat is free again while this waits.
    run(() => awaitUpdate(page.userId, reply.personavlm.user_turn_id));
  }
}

async function awaitUpdate(userId, turnId) {
  for (let poll = 0; poll < UPDATE_POLLS; poll += 1) {
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    if (page.userId !== userId) return;
    const data = await refreshPersonality();
    if (data.trajectory.some((reading) => reading.turn_id === turnId)) {
      await timeline.reload();
      notify("The memory update is done.");
      return;
    }
  }
  notify("The memory update is still queued; press Refresh later.");
}

// ---------------------------------------------------------------------- wiring

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(() => login($("#key-input").value.trim()));
});
$("#logout").addEventListener("click", logout);
$("#refresh").addEventListener("click", () =>
  run(() =>
    Promise.all([
      timeline.reload(),
      refreshPersonality(),
      jobs.reload(),
      page.me.admin ? loadUsers() : null,
    ]),
  ),
);

// Which model answers: /healthz needs no key, so the header says it before the login.
async function showBackend() {
  const health = await (await fetch("/healthz")).json();
  $("#backend").textContent = health.backend
    ? `model: ${health.backend}`
    : "no chat model (memory only)";
}
showBackend().catch((err) => console.error(err));

// A reload of the tab keeps the session's key; a key that stopped working is forgotten.
const savedKey = sessionStorage.getItem(KEY_STORAGE);
if (savedKey) {
  run(async () => {
    try {
      await login(savedKey);
    } catch (err) {
      sessionStorage.removeItem(KEY_STORAGE);
      throw err;
    }
  });
}
