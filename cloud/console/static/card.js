// The selected incident's card (#card): facts, actions' enabled state, and the panels
// loaded for it (log and notes, resident, heart rate, triggering and gateway events).
// Every load carries the token of the showing it was made for, so an answer that
// arrives after the dispatcher moved on to another incident is dropped.

import { renderChart } from "./chart.js";
import { age, place, serverNow, time } from "./format.js";
import { label, t } from "./i18n.js";
import { isClosed } from "./store.js";

const HOUR_MS = 3600 * 1000;
const MINUTE_MS = 60 * 1000;
const HELD = new Set(["claimed", "acknowledged", "dispatched"]);

export class Card {
  /** `fresher(incident)` is told of every newer copy of the incident the card fetched. */
  constructor(api, me, fresher) {
    this.api = api;
    this.me = me;
    this.fresher = fresher;
    this.busy = false;
    this.#reset(null);
  }

  get id() {
    return this.incident?.id ?? null;
  }

  /** Show `incident` (a summary) and start loading everything about it. */
  show(incident) {
    this.#reset(incident);
    this.render();
    this.#loadDetail();
    this.#loadEvents();
    this.#loadReadings();
    if (this.#holdsClaim()) this.#loadResident();
  }

  /** A newer copy of the shown incident: a summary (the log is refetched) or a detail. */
  update(incident) {
    if (incident.id !== this.id || !isNewer(incident, this.incident)) return;
    this.incident = incident;
    if (incident.log) this.detail = { status: "ok", value: incident };
    // The stream echoes the change an action's answer already brought: no refetch then.
    else if (this.detail?.value?.updated_at !== incident.updated_at) this.#loadDetail();
    if (!this.resident && this.#holdsClaim()) this.#loadResident();
    this.render();
  }

  clear() {
    this.#reset(null);
    this.render();
  }

  setBusy(busy) {
    this.busy = busy;
    this.#renderActions();
  }

  /** Whether `action` is valid now: by the incident's status, and for the claimant. */
  enabled(action) {
    const incident = this.incident;
    if (!incident || this.busy) return false;
    const mine = incident.claimed_by === this.me;
    switch (action) {
      case "claim":
        return incident.status === "open";
      case "acknowledge":
        return mine && incident.status === "claimed";
      case "dispatch":
        return mine && incident.status === "acknowledged";
      case "resolve":
        return mine && HELD.has(incident.status);
      case "note":
        return true;
      default:
        return false;
    }
  }

  #reset(incident) {
    this.incident = incident;
    this.token = {};
    this.detail = null;
    this.events = null;
    this.gatewayEvents = null;
    this.readings = null;
    this.resident = null;
    // The chart's window: the hour before now, or before the incident closed.
    const end = incident?.closed_at ? Date.parse(incident.closed_at) : serverNow();
    this.window = { from: end - HOUR_MS, to: end };
  }

  #holdsClaim() {
    return this.incident.claimed_by === this.me && HELD.has(this.incident.status);
  }

  /** Run `request`, keep its outcome in `this[field]` ({status, value | detail}), redraw. */
  async #load(field, request) {
    const token = this.token;
    // A reload keeps showing what it replaces until the answer comes.
    if (this[field]?.status !== "ok") {
      this[field] = { status: "loading" };
      this.render();
    }
    let outcome;
    try {
      outcome = { status: "ok", value: await request() };
    } catch (err) {
      outcome = { status: "error", code: err.status, detail: err.detail ?? err.message };
    }
    if (token !== this.token) return null;
    this[field] = outcome;
    this.render();
    return outcome;
  }

  async #loadDetail() {
    const outcome = await this.#load("detail", () => this.api.get(`/incidents/${this.id}`));
    if (outcome?.status === "ok" && isNewer(outcome.value, this.incident)) {
      this.incident = outcome.value;
      this.fresher(outcome.value);
      this.render();
    }
  }

  async #loadEvents() {
    const outcome = await this.#load("events", async () =>
      (await this.api.get(`/incidents/${this.id}/events`)).items,
    );
    const gateway = outcome?.status === "ok" ? outcome.value[0]?.gateway_id : null;
    if (!gateway) return;
    const opened = Date.parse(this.incident.opened_at);
    const query = new URLSearchParams({
      gateway_id: gateway,
      from: new Date(opened - 10 * MINUTE_MS).toISOString(),
      to: new Date(opened + 5 * MINUTE_MS).toISOString(),
      limit: "50",
    });
    this.#load("gatewayEvents", async () => (await this.api.get(`/events?${query}`)).items);
  }

  #loadReadings() {
    const device = this.incident.device_id;
    if (!device) {
      this.readings = { status: "ok", value: [] };
      return;
    }
    const query = new URLSearchParams({
      metric: "heart_rate_bpm",
      from: new Date(this.window.from).toISOString(),
      to: new Date(this.window.to).toISOString(),
      bucket: "raw",
      limit: "10000",
    });
    const path = `/devices/${encodeURIComponent(device)}/readings?${query}`;
    // A device without heart rate (a smoke detector, a door) answers 404 or 422: that
    // is "no readings" to the dispatcher, not an error.
    this.#load("readings", async () => {
      try {
        return (await this.api.get(path)).readings;
      } catch (err) {
        if (err.status === 404 || err.status === 422) return [];
        throw err;
      }
    });
  }

  #loadResident() {
    // Each reading is written to the access log, so it is asked for once per showing.
    this.#load("resident", () => this.api.get(`/incidents/${this.id}/resident`));
  }

  /** Redraw the card from what it holds (also after a change of language). */
  render() {
    const card = document.getElementById("card");
    const incident = this.incident;
    document.getElementById("card-empty").hidden = incident !== null;
    card.hidden = incident === null;
    if (!incident) {
      delete card.dataset.id;
      delete card.dataset.status;
      return;
    }
    card.dataset.id = String(incident.id);
    card.dataset.status = incident.status;
    card.classList.toggle("closed", isClosed(incident));
    this.#renderHead();
    this.#renderFacts();
    this.#renderActions();
    this.#renderResident();
    this.#renderEvents();
    this.#renderGatewayEvents();
    this.#renderLog();
    renderChart(
      document.getElementById("chart"),
      this.readings?.status === "loading" ? null : (this.readings?.value ?? []),
      this.events?.value,
      this.window.from,
      this.window.to,
    );
  }

  #renderHead() {
    const incident = this.incident;
    const priority = document.getElementById("card-priority");
    priority.textContent = `P${incident.priority}`;
    priority.className = `prio p${incident.priority}`;
    document.getElementById("card-title").textContent =
      `${label("type", incident.type)} #${incident.id}`;
    const status = document.getElementById("card-status");
    status.textContent = label("status", incident.status);
    status.className = `status ${incident.status}`;
    const escalation = document.getElementById("card-escalation");
    escalation.hidden = !(incident.escalation_level > 0);
    escalation.textContent = t("incident.escalated", { level: incident.escalation_level });
  }

  #renderFacts() {
    const i = this.incident;
    const facts = [
      ["fact.place", place(i)],
      ["fact.opened", [time(i.first_event_ts ?? i.opened_at), " · ", ageSpan(i.opened_at)]],
      ["fact.claimed", i.claimed_by && `${i.claimed_by} · ${time(i.claimed_at)}`],
      ["fact.acknowledged", i.acknowledged_at && time(i.acknowledged_at)],
      ["fact.dispatched", i.dispatched_to && `${i.dispatched_to} · ${time(i.dispatched_at)}`],
      ["fact.closed", i.closed_at && `${label("outcome", i.outcome)} · ${time(i.closed_at)}`],
      ["fact.device", i.device_id],
      ["fact.events", String(i.event_count)],
    ];
    const list = document.getElementById("card-facts");
    list.replaceChildren();
    for (const [key, value] of facts) {
      if (!value) continue;
      const dd = document.createElement("dd");
      dd.append(...[value].flat());
      list.append(element("dt", t(key)), dd);
    }
  }

  #renderActions() {
    for (const button of document.querySelectorAll("#actions [data-action]")) {
      button.disabled = !this.enabled(button.dataset.action);
    }
    document.getElementById("dispatch-to").disabled = !this.enabled("dispatch");
    const outcome = document.getElementById("outcome");
    outcome.disabled = !this.enabled("resolve");
    // Before contact only a false alarm may close it (docs/emergency-queue.md).
    const contactless = this.incident?.status === "claimed";
    for (const option of outcome.options) {
      option.disabled = contactless && option.value !== "false_alarm";
    }
    if (outcome.selectedOptions[0]?.disabled) outcome.value = "false_alarm";
    document.getElementById("note-text").disabled = !this.enabled("note");
  }

  #renderResident() {
    const resident = document.getElementById("resident");
    const contacts = document.getElementById("contacts");
    const loaded = this.resident;
    if (!loaded) {
      const line = t(isClosed(this.incident) ? "card.none" : "card.claim_to_see");
      resident.replaceChildren(element("p", line, "hint"));
      contacts.replaceChildren(element("p", line, "hint"));
      return;
    }
    if (loaded.status !== "ok") {
      const line = pending(loaded, "card.no_resident");
      resident.replaceChildren(line);
      contacts.replaceChildren();
      return;
    }
    const { resident: home, personal } = loaded.value;
    const facts = [
      ["resident.name", personal?.name],
      ["resident.phone", personal?.phone && telLink(personal.phone)],
      ["resident.reference", home.reference],
      ["resident.building", home.building],
      ["resident.unit", home.unit],
      [
        "resident.evacuation",
        home.needs_evacuation_help ? element("strong", t("yes"), "error") : t("no"),
      ],
      ["resident.medical", personal?.medical_notes],
    ];
    const list = document.createElement("dl");
    for (const [key, value] of facts) {
      if (!value) continue;
      const dd = document.createElement("dd");
      dd.append(value);
      list.append(element("dt", t(key)), dd);
    }
    resident.replaceChildren(list);
    if (!personal) resident.append(element("p", t("card.no_personal"), "hint"));

    const people = personal?.emergency_contacts ?? [];
    if (!people.length) {
      contacts.replaceChildren(element("p", t("card.no_contacts"), "hint"));
      return;
    }
    const rows = document.createElement("ul");
    for (const person of people) {
      const li = document.createElement("li");
      li.append(`${person.name}${person.relation ? ` (${person.relation})` : ""} `, telLink(person.phone));
      rows.append(li);
    }
    contacts.replaceChildren(rows);
  }

  #renderEvents() {
    fillEvents(document.getElementById("events"), this.events, new Set(), false);
  }

  #renderGatewayEvents() {
    const list = document.getElementById("gateway-events");
    if (this.events?.status === "ok" && !this.events.value.length) {
      list.replaceChildren(element("li", t("card.no_gateway"), "hint"));
      return;
    }
    const triggering = new Set((this.events?.value ?? []).map((e) => e.id));
    fillEvents(list, this.gatewayEvents, triggering, true);
  }

  #renderLog() {
    const list = document.getElementById("log");
    if (this.detail?.status !== "ok") {
      list.replaceChildren(this.detail ? pending(this.detail, "card.none", "li") : "");
      return;
    }
    const { log, notes } = this.detail.value;
    const rows = [
      ...log.map((entry) => ({
        at: entry.at,
        className: "change",
        text: `${change(entry)} · ${entry.actor}${entry.note ? `: ${entry.note}` : ""}`,
      })),
      ...notes.map((note) => ({
        at: note.at,
        className: "note",
        text: `${t("log.note")} · ${note.author}: ${note.text}`,
      })),
    ].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
    list.replaceChildren(
      ...rows.map((row) => {
        const li = element("li", "", row.className);
        li.append(element("time", time(row.at)), " ", row.text);
        return li;
      }),
    );
  }
}

/** "claimed → in contact", or "opened" for the row that opened the incident. */
function change(entry) {
  if (!entry.from_status) return t("log.opened");
  return `${label("status", entry.from_status)} → ${label("status", entry.to_status)}`;
}

function isNewer(incident, known) {
  return Date.parse(incident.updated_at) >= Date.parse(known.updated_at);
}

/** Rows of events (time, type, severity; the device for the gateway's list). */
function fillEvents(list, loaded, highlighted, withDevice) {
  if (loaded?.status !== "ok") {
    list.replaceChildren(loaded ? pending(loaded, "card.none", "li") : "");
    return;
  }
  if (!loaded.value.length) {
    list.replaceChildren(element("li", t("card.none"), "hint"));
    return;
  }
  list.replaceChildren(
    ...loaded.value.map((event) => {
      const li = element("li", "", highlighted.has(event.id) ? "trigger" : "");
      li.append(
        element("time", time(event.ts)),
        " ",
        element("span", label("type", event.type), "type"),
        " ",
        element("span", label("severity", event.severity), `severity ${event.severity}`),
      );
      if (withDevice) li.append(" ", element("span", event.device_id, "device"));
      return li;
    }),
  );
}

/** "Loading…", or why a load failed (`notFoundKey` for a 404). */
function pending(loaded, notFoundKey, tag = "p") {
  if (loaded.status === "loading") return element(tag, t("card.loading"), "hint");
  if (loaded.code === 404) return element(tag, t(notFoundKey), "hint");
  return element(tag, t("card.load_failed", { detail: loaded.detail }), "error");
}

function ageSpan(iso) {
  const span = element("span", age(iso), "age");
  span.dataset.opened = iso;
  return span;
}

function telLink(phone) {
  const link = element("a", phone);
  link.href = `tel:${phone.replace(/[^\d+]/g, "")}`;
  return link;
}

function element(tag, text, className) {
  const el = document.createElement(tag);
  if (text) el.textContent = text;
  if (className) el.className = className;
  return el;
}
