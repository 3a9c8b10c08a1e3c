// The three queue lists (#unclaimed, #mine, #others), rebuilt from the store on every
// change; only the ages are touched in between (refreshAges, every second).

import { age, place } from "./format.js";
import { label, t } from "./i18n.js";

export function renderQueue(store, selectedId) {
  fill("unclaimed", store.unclaimed(), selectedId, () => null);
  fill("mine", store.mine(), selectedId, (i) => span("status", label("status", i.status)));
  fill("others", store.others(), selectedId, (i) =>
    span("taken", t("incident.taken_by", { name: i.claimed_by ?? "?" })),
  );
}

function fill(listId, incidents, selectedId, extra) {
  const list = document.getElementById(listId);
  list.replaceChildren(...incidents.map((i) => entry(i, i.id === selectedId, extra(i))));
  document.getElementById(`${listId}-count`).textContent = String(incidents.length);
}

function entry(incident, selected, extra) {
  const li = document.createElement("li");
  li.className = `incident p${incident.priority}`;
  li.dataset.id = String(incident.id);
  li.dataset.priority = String(incident.priority);
  li.dataset.status = incident.status;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", String(selected));
  li.tabIndex = -1;
  const parts = [
    span("prio", `P${incident.priority}`),
    span("type", label("type", incident.type)),
    ageSpan(incident.opened_at),
    span("place", place(incident)),
  ];
  if (incident.escalation_level > 0) {
    parts.push(span("escalated", t("incident.escalated", { level: incident.escalation_level })));
  }
  if (extra) parts.push(extra);
  li.append(...parts);
  return li;
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function ageSpan(opened) {
  const el = span("age", age(opened));
  el.dataset.opened = opened;
  return el;
}

/** Update every age on the page (queue and card) in place, so focus and scroll stay. */
export function refreshAges() {
  for (const el of document.querySelectorAll(".age[data-opened]")) {
    el.textContent = age(el.dataset.opened);
  }
}
