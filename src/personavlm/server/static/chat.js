// The chat panel: a message and an optional picture (sent as a data URL, the only kind the
// service takes), POST /v1/chat/completions without streaming, then the answer with its
// reasoning trace. `onReply` lets the page refresh the memory and personality views.

import { el } from "./dom.js";
import { traceView } from "./trace.js";

export class ChatPanel {
  // ui: {form, text, image, preview, send, log}; page: {api, run(action), onReply(reply)}
  constructor(ui, page) {
    this.ui = ui;
    this.page = page;
    this.userId = null;
    this.model = null;
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      page.run(() => this.send());
    });
    ui.image.addEventListener("change", () => page.run(() => this.preview()));
  }

  show(userId) {
    this.userId = userId;
    this.ui.log.replaceChildren();
  }

  async preview() {
    const file = this.ui.image.files[0];
    this.ui.preview.hidden = !file;
    if (file) this.ui.preview.src = await readDataUrl(file);
  }

  async modelName() {
    if (!this.model) {
      const models = await this.page.api.get("/v1/models");
      this.model = models.data[0].id;
    }
    return this.model;
  }

  async send() {
    const text = this.ui.text.value.trim();
    const file = this.ui.image.files[0];
    if (!text && !file) throw new Error("Write a message or pick a picture first.");
    const picture = file ? await readDataUrl(file) : null;
    const pending = this.exchangeItem(text, picture);
    this.ui.send.disabled = true;
    try {
      const reply = await this.page.api.post("/v1/chat/completions", {
        model: await this.modelName(),
        user: this.userId,
        messages: [{ role: "user", content: contentParts(text, picture) }],
      });
      this.ui.form.reset();
      this.ui.preview.hidden = true;
      showReply(pending, reply);
      await this.page.onReply(reply);
    } catch (err) {
      pending.querySelector(".assistant-msg").replaceChildren(
        el("p", { class: "error-text", text: `Not answered: ${err.message}` }),
      );
      throw err;
    } finally {
      pending.setAttribute("aria-busy", "false");
      this.ui.send.disabled = false;
    }
  }

  exchangeItem(text, picture) {
    const item = el(
      "li",
      { class: "exchange", "aria-busy": "true" },
      el(
        "div",
        { class: "user-msg" },
        el("p", { text }),
        picture ? el("img", { src: picture, alt: "the picture you sent" }) : null,
      ),
      el("div", { class: "assistant-msg" }, el("p", { class: "waiting", text: "Thinking…" })),
    );
    this.ui.log.append(item);
    return item;
  }
}

function showReply(item, reply) {
  const answer = reply.choices[0].message.content;
  const extra = reply.personavlm;
  item.querySelector(".assistant-msg").replaceChildren(
    el("p", { class: "answer", text: answer }),
    extra ? traceView(extra.trace) : el("p", { class: "note", text: "(no trace in this reply)" }),
  );
}

function contentParts(text, picture) {
  const parts = [];
  if (text) parts.push({ type: "text", text });
  if (picture) parts.push({ type: "image_url", image_url: { url: picture } });
  return parts;
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}
