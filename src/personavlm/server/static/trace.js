// One answer's reasoning, drawn from the reply's `personavlm.trace` (agent/trace.py to_dict,
// format 1): the steps (think, retrieve with the memories it found, answer, failure), then what
// the update phase did (or that it is queued), then the token totals.

import { el } from "./dom.js";

export function traceView(trace) {
  const steps = trace.steps ?? [];
  return el(
    "div",
    { class: "trace" },
    el(
      "details",
      { class: "steps", open: true },
      el("summary", { text: `Reasoning: ${steps.length} step${steps.length === 1 ? "" : "s"}` }),
      trace.failed
        ? el("p", { class: "warning", text: "The model broke the protocol: a fallback answer." })
        : null,
      el("ol", {}, steps.map(stepView)),
    ),
    updatesView(trace.updates ?? []),
    totalsView(trace.totals ?? {}),
  );
}

function stepView(step) {
  const view = STEP_VIEWS[step.kind];
  if (!view) {
    return el("li", { class: "step" }, `${step.kind}: ${JSON.stringify(step)}`);
  }
  return el("li", { class: `step step-${step.kind}`, "data-kind": step.kind }, view(step));
}

const STEP_VIEWS = {
  think: (step) => [el("strong", { text: "Think " }), step.text],
  answer: (step) => [el("strong", { text: "Answer " }), step.text],
  failure: (step) => [
    el("strong", { text: "Failure " }),
    step.error,
    el("pre", { class: "reply", text: step.reply }),
  ],
  retrieve: retrieveView,
};

function retrieveView(step) {
  const window =
    step.start || step.end ? ` between ${step.start ?? "…"} and ${step.end ?? "…"}` : "";
  const hits = step.hits ?? [];
  return [
    el("strong", { text: "Retrieve " }),
    `"${step.keywords}"${window}: ${hits.length} memor${hits.length === 1 ? "y" : "ies"}`,
    (step.notes ?? []).map((note) => el("p", { class: "note", text: note })),
    el(
      "ol",
      { class: "hits" },
      hits.map((hit) =>
        el(
          "li",
          { class: "hit", "data-memory-id": hit.memory_id },
          el("span", { class: "score", text: `score ${Number(hit.score).toFixed(3)}` }),
          el("span", { class: `badge type-${hit.type}`, text: hit.type }),
          " ",
          hit.time ? el("time", { text: hit.time }) : null,
          " ",
          el("span", { class: "content", text: hit.content }),
          hit.image_ids.length
            ? el("span", { class: "note", text: ` (${hit.image_ids.length} picture)` })
            : null,
        ),
      ),
    ),
  ];
}

function updatesView(updates) {
  if (!updates.length) return null;
  return el(
    "details",
    { class: "updates", open: true },
    el("summary", { text: "Memory update" }),
    el("ul", {}, updates.map(updateView)),
  );
}

function updateView(report) {
  const changes = report.changes ?? [];
  return el(
    "li",
    { class: `update update-${report.status}`, "data-status": report.status },
    `${report.kind} update: ${report.status}`,
    report.status === "queued" ? " (runs in the background; the memory view refreshes)" : "",
    report.error ? el("p", { class: "error-text", text: report.error }) : null,
    report.reading
      ? el("p", { class: "note", text: `personality reading: ${formatTraits(report.reading)}` })
      : null,
    changes.length
      ? el(
          "ul",
          {},
          changes.map((c) =>
            el(
              "li",
              { class: `change change-${c.op}` },
              `${c.op} ${c.memory_type}${c.memory_id === null ? "" : ` #${c.memory_id}`}`,
              c.content ? `: ${c.content}` : "",
              c.note ? ` (${c.note})` : "",
            ),
          ),
        )
      : null,
  );
}

function totalsView(totals) {
  const parts = Object.entries(totals)
    .filter(([, t]) => t.calls > 0)
    .map(
      ([phase, t]) =>
        `${phase}: ${t.calls} call${t.calls === 1 ? "" : "s"}, ` +
        `${t.prompt_tokens + t.completion_tokens} tokens, ${t.latency_s} s`,
    );
  return parts.length ? el("p", { class: "totals", text: parts.join("; ") }) : null;
}

function formatTraits(traits) {
  return Object.entries(traits)
    .map(([name, value]) => `${name} ${value}`)
    .join(", ");
}
