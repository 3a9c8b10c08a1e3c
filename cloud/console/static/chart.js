// The heart-rate chart: an inline SVG (no library, nothing for the CSP to refuse) of
// readings over [from, to), with the incident's triggering events as markers on top.

import { label, t } from "./i18n.js";
import { time } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 900;
const HEIGHT = 150;
const PLOT = { left: 40, right: WIDTH - 10, top: 16, bottom: HEIGHT - 22 };

/**
 * Draw into `container`: `readings` [{ts, value}], `events` [EventView], the window
 * `from`/`to` in epoch ms. Readings may be null while they load.
 */
export function renderChart(container, readings, events, from, to) {
  const svg = node("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": t("card.chart"),
  });
  const x = (ms) => PLOT.left + ((ms - from) / (to - from)) * (PLOT.right - PLOT.left);
  const values = (readings ?? []).map((r) => r.value);
  // A steady band around normal resting rates, widened to whatever was measured.
  const low = Math.floor(Math.min(50, ...values) / 10) * 10;
  const high = Math.ceil(Math.max(120, ...values) / 10) * 10;
  const y = (v) => PLOT.bottom - ((v - low) / (high - low)) * (PLOT.bottom - PLOT.top);

  for (const v of [low, (low + high) / 2, high]) {
    svg.append(node("line", { class: "grid", x1: PLOT.left, x2: PLOT.right, y1: y(v), y2: y(v) }));
    svg.append(text(PLOT.left - 4, y(v) + 4, String(v), "end"));
  }
  svg.append(text(PLOT.left, HEIGHT - 6, time(new Date(from).toISOString()), "start"));
  svg.append(text(PLOT.right, HEIGHT - 6, time(new Date(to).toISOString()), "end"));

  if (values.length) {
    const points = readings
      .map((r) => `${x(Date.parse(r.ts)).toFixed(1)},${y(r.value).toFixed(1)}`)
      .join(" ");
    svg.append(node("polyline", { class: "rate", points }));
  }
  for (const event of events ?? []) {
    const at = Date.parse(event.ts);
    if (at < from || at > to) continue;
    svg.append(node("line", { class: "event-line", x1: x(at), x2: x(at), y1: PLOT.top, y2: PLOT.bottom }));
    const marker = node("circle", { class: `event ${event.severity}`, cx: x(at), cy: PLOT.top, r: 5 });
    const title = node("title", {});
    title.textContent = `${time(event.ts)} ${label("type", event.type)}`;
    marker.append(title);
    svg.append(marker);
  }

  const parts = [svg];
  if (readings && !values.length) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = t("card.no_readings");
    parts.unshift(empty);
  }
  container.replaceChildren(...parts);
}

function node(name, attributes) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  return el;
}

function text(xPos, yPos, content, anchor) {
  const el = node("text", { x: xPos, y: yPos, "text-anchor": anchor });
  el.textContent = content;
  return el;
}
