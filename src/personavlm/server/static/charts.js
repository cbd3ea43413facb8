// The personality drawn as inline SVG: a radar of the current Big Five and their trajectory
// over the readings. Traits are on the PEM scale 1..5 (personality/pem.py), neutral 3.

import { svg } from "./dom.js";

export const TRAITS = [
  "openness",
  "conscientiousness",
  "extraversion",
  "agreeableness",
  "neuroticism",
];
const COLORS = ["#1b6ca8", "#2e8540", "#b35c00", "#7a3ea1", "#b0283f"];
const LOW = 1;
const HIGH = 5;
const NEUTRAL = 3;

function fraction(value) {
  return (value - LOW) / (HIGH - LOW);
}

function fmt(value) {
  return Number(value).toFixed(2);
}

// --------------------------------------------------------------------------- radar

const RADIUS = 90;

function radarPoint(index, value) {
  // The first axis points up; the others follow clockwise, 72 degrees apart.
  const angle = -Math.PI / 2 + (index * 2 * Math.PI) / TRAITS.length;
  const r = RADIUS * fraction(value);
  return [r * Math.cos(angle), r * Math.sin(angle)];
}

function polygonPoints(values) {
  return values.map((v, i) => radarPoint(i, v).map((c) => c.toFixed(1)).join(",")).join(" ");
}

export function radar(traits) {
  const values = TRAITS.map((t) => traits[t]);
  const summary = TRAITS.map((t, i) => `${t} ${fmt(values[i])}`).join(", ");
  const chart = svg(
    "svg",
    {
      class: "radar",
      viewBox: "-240 -128 480 250",
      role: "img",
      "aria-label": `Current Big Five: ${summary}`,
    },
    svg("title", { text: `Current Big Five: ${summary}` }),
  );
  for (let level = LOW; level <= HIGH; level += 1) {
    const ring = Array(TRAITS.length).fill(level);
    chart.append(svg("polygon", { class: "ring", points: polygonPoints(ring) }));
  }
  TRAITS.forEach((trait, i) => chart.append(...radarAxis(trait, i, values[i])));
  chart.append(svg("polygon", { class: "values", points: polygonPoints(values) }));
  TRAITS.forEach((trait, i) => {
    const [x, y] = radarPoint(i, values[i]);
    chart.append(
      svg(
        "circle",
        { class: "value-point", cx: x.toFixed(1), cy: y.toFixed(1), r: 3, "data-trait": trait },
        svg("title", { text: `${trait}: ${fmt(values[i])}` }),
      ),
    );
  });
  return chart;
}

function radarAxis(trait, index, value) {
  const [x, y] = radarPoint(index, HIGH);
  const [lx, ly] = radarPoint(index, HIGH + 0.5);
  const anchor = Math.abs(lx) < 5 ? "middle" : lx > 0 ? "start" : "end";
  // The top label sits above its axis end, the others beside it: name, then value below.
  const top = Math.abs(lx) < 5 ? ly - 14 : ly;
  const line = { x1: 0, y1: 0, x2: x.toFixed(1), y2: y.toFixed(1), "data-trait": trait };
  return [
    svg("line", { class: "axis", ...line }),
    svg(
      "text",
      { class: "axis-label", x: lx.toFixed(1), y: top.toFixed(1), "text-anchor": anchor },
      svg("tspan", { x: lx.toFixed(1), text: trait }),
      svg("tspan", { x: lx.toFixed(1), dy: "1.2em", class: "axis-value", text: fmt(value) }),
    ),
  ];
}

// ---------------------------------------------------------------------- trajectory

const WIDTH = 320;
const HEIGHT = 160;
const PAD = { left: 28, right: 10, top: 10, bottom: 24 };

// readings: the service's trajectory, oldest first; each has time and traits_after.
export function trajectory(readings) {
  // The estimate starts neutral before the first reading (PersonalityState.initial), so even
  // one reading draws a line: from the start to where that reading moved it.
  const points = [{ label: "start", traits: neutralTraits() }].concat(
    readings.map((r) => ({ label: r.time, traits: r.traits_after })),
  );
  const x = (i) => PAD.left + ((WIDTH - PAD.left - PAD.right) * i) / (points.length - 1);
  const y = (v) => PAD.top + (HEIGHT - PAD.top - PAD.bottom) * (1 - fraction(v));
  const chart = svg(
    "svg",
    {
      class: "trajectory",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": `Big Five after each of ${readings.length} readings`,
    },
    svg("title", { text: `Big Five after each of ${readings.length} readings` }),
  );
  for (let level = LOW; level <= HIGH; level += 1) {
    chart.append(
      svg("line", {
        class: "grid",
        x1: PAD.left,
        x2: WIDTH - PAD.right,
        y1: y(level),
        y2: y(level),
      }),
      svg("text", {
        class: "tick",
        x: PAD.left - 6,
        y: y(level) + 4,
        "text-anchor": "end",
        text: level,
      }),
    );
  }
  chart.append(
    svg("text", {
      class: "tick",
      x: (PAD.left + WIDTH - PAD.right) / 2,
      y: HEIGHT - 6,
      "text-anchor": "middle",
      text: `readings (${readings.length})`,
    }),
  );
  TRAITS.forEach((trait, t) => chart.append(traitLine(trait, COLORS[t], points, x, y)));
  return chart;
}

function traitLine(trait, color, points, x, y) {
  const coords = points.map((p, i) => `${x(i).toFixed(1)},${y(p.traits[trait]).toFixed(1)}`);
  const group = svg(
    "g",
    { class: "trait-line", "data-trait": trait },
    svg("polyline", { points: coords.join(" "), stroke: color, fill: "none" }),
  );
  points.forEach((p, i) => {
    group.append(
      svg(
        "circle",
        { cx: x(i).toFixed(1), cy: y(p.traits[trait]).toFixed(1), r: 2.5, fill: color },
        svg("title", { text: `${trait} ${fmt(p.traits[trait])} (${p.label})` }),
      ),
    );
  });
  return group;
}

function neutralTraits() {
  return Object.fromEntries(TRAITS.map((t) => [t, NEUTRAL]));
}

export function legend() {
  const items = TRAITS.map((trait, t) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLORS[t];
    item.append(swatch, trait);
    return item;
  });
  const list = document.createElement("ul");
  list.className = "legend";
  list.append(...items);
  return list;
}
