// Update jobs that failed too often ("dead"): listed with their error and the replies the
// model gave, each with Retry (after fixing the model) and Drop (give it up; its turn is
// marked skipped in the audit log). docs/service.md, "Routes": /v1/users/{id}/jobs.

import { userPath } from "./api.js";
import { el } from "./dom.js";

export class JobsPanel {
  constructor(nodes, page) {
    this.nodes = nodes; // { section, list }
    this.page = page;
    this.userId = null;
  }

  async show(userId) {
    this.userId = userId;
    await this.reload();
  }

  async reload() {
    const userId = this.userId;
    const data = await this.page.api.get(`${userPath(userId)}/jobs?status=dead`);
    if (userId !== this.userId) return; // the user changed while this was loading
    this.nodes.section.hidden = data.data.length === 0;
    this.nodes.list.replaceChildren(...data.data.map((job) => this.item(job)));
  }

  item(job) {
    const error = (job.last_error ?? "").split("\n")[0];
    const replies = el(
      "details",
      {},
      el("summary", { text: `${job.replies.length} replies the model gave` }),
      ...job.replies.map((reply) => el("pre", { text: reply })),
    );
    return el(
      "li",
      { class: "job", "data-job-id": job.id },
      el("strong", { text: `Job ${job.id} (${job.kind})` }),
      ` failed ${job.attempts} times: `,
      el("span", { class: "job-error", text: error }),
      replies,
      el("button", { type: "button", onclick: () => this.act(job, "retry"), text: "Retry" }),
      el("button", { type: "button", onclick: () => this.act(job, "drop"), text: "Drop" }),
    );
  }

  act(job, verb) {
    this.page.run(async () => {
      await this.page.api.post(`${userPath(this.userId)}/jobs/${job.id}/${verb}`);
      this.page.notify(verb === "retry" ? `Job ${job.id} is queued again.` : `Job ${job.id} dropped.`);
      await this.reload();
    });
  }
}
