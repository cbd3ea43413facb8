// The memory timeline of one user: a type tab, a status filter, pages of memories in event-time
// order (the service's keyset cursor behind "More"), and per memory its history (events, each
// with an Undo button) and its versions.

import { userPath } from "./api.js";
import { el } from "./dom.js";

const PAGE_SIZE = 50;

export class MemoryTimeline {
  // ui: {list, more, tabs, status}; page: {api, run(action), report(err), notify(text)}
  constructor(ui, page) {
    this.ui = ui;
    this.page = page;
    this.userId = null;
    this.type = "";
    this.cursor = null;
    // Bumped by every reload: a page that arrives after a newer reload began is dropped, so
    // two overlapping reloads (an undo, then a filter change) never mix their lists.
    this.generation = 0;
    this.openHistories = new Set(); // memory ids whose history stays open across refreshes
    this.images = new Map(); // image id -> object URL, fetched once per page load
    ui.more.addEventListener("click", () => page.run(() => this.loadPage()));
    ui.status.addEventListener("change", () => page.run(() => this.reload()));
    for (const tab of ui.tabs) {
      tab.addEventListener("click", () => page.run(() => this.selectType(tab)));
    }
  }

  async show(userId) {
    this.userId = userId;
    this.openHistories.clear();
    await this.reload();
  }

  async selectType(tab) {
    for (const other of this.ui.tabs) other.setAttribute("aria-selected", String(other === tab));
    this.type = tab.dataset.type;
    await this.reload();
  }

  async reload() {
    this.generation += 1;
    this.cursor = null;
    this.ui.list.replaceChildren();
    this.ui.more.hidden = true;
    await this.loadPage();
  }

  async loadPage() {
    const generation = this.generation;
    // Newest first: a memory the last answer wrote is on the first page, however many there are.
    const query = new URLSearchParams({
      status: this.ui.status.value,
      limit: String(PAGE_SIZE),
      order: "desc",
    });
    if (this.type) query.set("type", this.type);
    if (this.cursor) query.set("cursor", this.cursor);
    this.ui.more.disabled = true; // one page at a time, or "More" twice would repeat a page
    let page;
    try {
      page = await this.page.api.get(`${userPath(this.userId)}/memories?${query}`);
    } finally {
      this.ui.more.disabled = false;
    }
    if (generation !== this.generation) return;
    this.cursor = page.next_cursor;
    this.ui.more.hidden = !this.cursor;
    if (!page.data.length && !this.ui.list.children.length) {
      this.ui.list.append(el("li", { class: "empty", text: "No memories here yet." }));
    }
    const items = page.data.map((memory) => [this.memoryItem(memory), memory]);
    this.ui.list.append(...items.map(([item]) => item));
    const reopen = items.filter(([, memory]) => this.openHistories.has(memory.id));
    await Promise.all(reopen.map(([item, memory]) => this.openHistory(item, memory)));
  }

  memoryItem(memory) {
    const toggle = el("button", {
      type: "button",
      class: "history-toggle",
      "aria-expanded": "false",
      text: "History",
    });
    const history = el("div", { class: "history", hidden: true });
    const item = el(
      "li",
      {
        class: `memory status-${memory.status}`,
        "data-memory-id": memory.id,
        "data-type": memory.type,
        "data-status": memory.status,
      },
      el(
        "div",
        { class: "memory-head" },
        el("span", { class: `badge type-${memory.type}`, text: memory.type }),
        el("span", { class: `badge status status-${memory.status}`, text: memory.status }),
        el("time", { text: timeSpan(memory) }),
        memory.key ? el("span", { class: "key", text: `key ${memory.key}` }) : null,
        memory.version > 1 ? el("span", { class: "version", text: `v${memory.version}` }) : null,
      ),
      el("p", { class: "content", text: memory.content }),
      this.pictures(memory.image_ids),
      toggle,
      history,
    );
    toggle.addEventListener("click", () =>
      this.page.run(() =>
        history.hidden ? this.openHistory(item, memory) : this.closeHistory(item, memory),
      ),
    );
    return item;
  }

  pictures(imageIds) {
    if (!imageIds.length) return null;
    const box = el("div", { class: "pictures" });
    for (const id of imageIds) {
      const img = el("img", { alt: `picture ${id.slice(0, 12)}`, "data-image-id": id });
      box.append(img);
      this.imageUrl(id)
        .then((url) => (img.src = url))
        .catch((err) => this.page.report(err));
    }
    return box;
  }

  imageUrl(id) {
    if (!this.images.has(id)) {
      const url = this.page.api.imageUrl(this.userId, id);
      url.catch(() => this.images.delete(id)); // a failure is reported, then retried next time
      this.images.set(id, url);
    }
    return this.images.get(id);
  }

  async openHistory(item, memory) {
    const base = `${userPath(this.userId)}/memories/${memory.id}`;
    const [events, versions] = await Promise.all([
      this.page.api.get(`${base}/history`),
      this.page.api.get(`${base}/timeline`),
    ]);
    const history = item.querySelector(".history");
    history.replaceChildren(
      el("h4", { text: "Events" }),
      el("ol", { class: "events" }, events.data.map((e) => this.eventItem(e))),
      el("h4", { text: "Versions" }),
      el("ol", { class: "versions" }, versions.data.map(versionItem)),
    );
    history.hidden = false;
    item.querySelector(".history-toggle").setAttribute("aria-expanded", "true");
    this.openHistories.add(memory.id);
  }

  closeHistory(item, memory) {
    item.querySelector(".history").hidden = true;
    item.querySelector(".history-toggle").setAttribute("aria-expanded", "false");
    this.openHistories.delete(memory.id);
  }

  eventItem(event) {
    const undo = el("button", { type: "button", class: "undo", text: `Undo event ${event.id}` });
    undo.addEventListener("click", () => this.page.run(() => this.undo(event)));
    return el(
      "li",
      { class: "event", "data-event-id": event.id, "data-op": event.op },
      el("span", { class: "op", text: event.op }),
      ` by ${event.actor} at ${event.time}`,
      event.undoes ? ` (undoes event ${event.undoes})` : "",
      el("ul", { class: "changes" }, event.changes.map(changeItem)),
      undo,
    );
  }

  async undo(event) {
    const done = await this.page.api.post(`${userPath(this.userId)}/events/${event.id}/undo`);
    this.page.notify(`Event ${event.id} (${event.op}) undone by event ${done.id}.`);
    await this.reload();
  }
}

function versionItem(memory) {
  const until = memory.valid_to ? ` until ${memory.valid_to}` : "";
  return el(
    "li",
    { class: "version-item", "data-memory-id": memory.id, "data-status": memory.status },
    el("span", { class: `badge status status-${memory.status}`, text: memory.status }),
    ` v${memory.version}, valid from ${memory.valid_from}${until}: `,
    el("span", { class: "content", text: memory.content }),
  );
}

function changeItem(change) {
  const state = (snapshot) => (snapshot ? snapshot.status : "absent");
  return el(
    "li",
    {},
    `memory ${change.memory_id}: ${state(change.before)} → ${state(change.after)}`,
  );
}

function timeSpan(memory) {
  return memory.event_end && memory.event_end !== memory.event_start
    ? `${memory.event_start} – ${memory.event_end}`
    : memory.event_start;
}
