// The dispatcher console: signs in with a key, keeps the queue current from the live
// stream, and carries out the dispatcher's actions on the selected incident.

import { Api, ApiError } from "./api.js";
import { alarm, primeSound, setTitle } from "./attention.js";
import { Card } from "./card.js";
import { setServerTime } from "./format.js";
import { initialLanguage, label, language, setLanguage, t } from "./i18n.js";
import { bindKeys } from "./keys.js";
import { LiveFeed } from "./live.js";
import { refreshAges, renderQueue } from "./queue.js";
import { IncidentStore } from "./store.js";

const KEY_STORAGE = "anju.console.key";
const QUEUE_LIMIT = 200;
const RELOAD_RETRY_MS = 2000;
const RELOAD_RETRY_MAX_MS = 30000;

const $ = (id) => document.getElementById(id);

/** The signed-in dispatcher's state; null while signed out. */
let session = null;
let liveState = "reconnecting";

function start() {
  setLanguage(initialLanguage(), false);
  $("lang").value = language();
  $("lang").addEventListener("change", () => {
    setLanguage($("lang").value, true);
    relabel();
  });
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    primeSound();
    signIn($("key").value.trim());
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("keys-button").addEventListener("click", toggleHelp);
  // Sound may only start after a gesture: any click or key press wakes it.
  document.addEventListener("pointerdown", primeSound);
  $("queue").addEventListener("click", (event) => {
    const entry = event.target.closest("li.incident");
    if (entry) select(Number(entry.dataset.id));
  });
  $("actions").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button.dataset.action);
  });
  bindKeys({
    any: primeSound,
    next: () => step(1),
    previous: () => step(-1),
    nextUnclaimed: () => {
      const first = session?.store.unclaimed()[0];
      if (first) select(first.id);
    },
    claim: () => act("claim"),
    acknowledge: () => act("acknowledge"),
    focusDispatch: () => focusIfEnabled("dispatch-to"),
    focusOutcome: () => focusIfEnabled("outcome"),
    dispatch: () => act("dispatch"),
    resolve: () => act("resolve"),
    note: () => act("note"),
    toggleHelp,
    closeHelp: () => { $("keys-help").hidden = true; },
  });
  setInterval(refreshAges, 1000);

  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) signIn(saved);
  else showSignIn("");
}

async function signIn(key) {
  if (!key) return;
  $("signin-submit").disabled = true;
  const api = new Api(key);
  let me;
  try {
    me = await api.get("/me");
  } catch (err) {
    sessionStorage.removeItem(KEY_STORAGE);
    const refused = err.status === 401 || err.status === 403;
    showSignIn(t(refused ? "signin.refused" : "signin.failed", { detail: err.detail }));
    return;
  } finally {
    $("signin-submit").disabled = false;
  }
  if (!me.permissions.includes("queue:act")) {
    sessionStorage.removeItem(KEY_STORAGE);
    showSignIn(t("signin.no_queue", { role: label("role", me.role) }));
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key").value = "";
  const store = new IncidentStore(me.name);
  const card = new Card(api, me.name, (incident) => {
    store.upsert(incident);
    render();
  });
  session = { api, me, store, card, reloads: 0, loaded: false, feed: null, pending: null, reloadFailures: 0 };
  session.feed = new LiveFeed(key, {
    hello: (data) => {
      setServerTime(data.server_time);
      reload();
    },
    incident: arrived,
    resync: reload,
    state: setLive,
    denied: (detail) => signOut(t("notice.signed_out", { detail })),
  });
  $("signin").hidden = true;
  $("workspace").hidden = false;
  $("signout").hidden = false;
  $("keys-button").hidden = false;
  $("live-status").hidden = false;
  setLive("reconnecting");
  relabel();
  reload();
  session.feed.start();
}

function signOut(message) {
  session?.feed.stop();
  session?.card.clear();
  session = null;
  sessionStorage.removeItem(KEY_STORAGE);
  for (const id of ["unclaimed", "mine", "others"]) $(id).replaceChildren();
  showNotice("");
  showSignIn(message);
}

function showSignIn(message) {
  $("signin").hidden = false;
  $("workspace").hidden = true;
  $("signout").hidden = true;
  $("keys-button").hidden = true;
  $("live-status").hidden = true;
  $("whoami").textContent = "";
  $("signin-error").textContent = message;
  setTitle(0);
  $("key").focus();
}

/** Load the queue afresh: at sign-in, after every hello (catching up after a drop or a
 * restart) and on resync. Her own incidents are asked for apart, so a long queue of
 * open ones never pushes them out of the first page. */
async function reload() {
  const s = session;
  if (!s) return;
  const generation = ++s.reloads;
  const since = performance.now();
  let queue;
  let mine;
  try {
    [queue, mine] = await Promise.all([
      s.api.get(`/incidents?limit=${QUEUE_LIMIT}`),
      s.api.get(`/incidents?${new URLSearchParams({ limit: QUEUE_LIMIT, claimed_by: s.me.name })}`),
    ]);
  } catch (err) {
    if (s !== session) return;
    if (err.status === 401) {
      signOut(t("notice.signed_out", { detail: err.detail }));
      return;
    }
    // The stream may stay up (a 503 while the database recovers): try again on our
    // own, so the queue is never left stale under a "live" badge.
    showNotice(t("notice.unreachable", { detail: err.detail ?? err.message }));
    const wait = Math.min(RELOAD_RETRY_MS * 2 ** s.reloadFailures, RELOAD_RETRY_MAX_MS);
    s.reloadFailures += 1;
    setTimeout(() => { if (s === session && generation === s.reloads) reload(); }, wait);
    return;
  }
  if (s.reloadFailures) showNotice("");
  s.reloadFailures = 0;
  if (s !== session || generation !== s.reloads) return;
  const unseen = s.store.replace([...queue.items, ...mine.items], since);
  $("more").hidden = !queue.next_cursor;
  // On the first load everything is unseen; after it, an unseen open P1 is one opened
  // while the page was away.
  if (s.loaded && unseen.some(isNewAlarm)) alarm();
  s.loaded = true;
  render();
  const shown = s.card.incident;
  if (shown && !s.store.get(shown.id) && !s.store.closed.has(shown.id)) recheck(shown.id);
}

/** An incident from the live stream. */
function arrived(incident) {
  const s = session;
  if (!s) return;
  const unseen = !s.store.seen.has(incident.id);
  if (!s.store.upsert(incident)) return;
  if (s.loaded && unseen && isNewAlarm(incident)) alarm();
  s.card.update(incident);
  render();
}

function isNewAlarm(incident) {
  return incident.priority === 1 && incident.status === "open";
}

/** The shown incident left the queue: show how it ended, or clear the card if it is
 * out of reach now. */
async function recheck(id) {
  const s = session;
  try {
    const incident = await s.api.get(`/incidents/${id}`);
    if (s !== session) return;
    s.store.upsert(incident);
    s.card.update(incident);
  } catch (err) {
    if (s !== session || err.status !== 404) return;
    s.store.remove(id);
    if (s.card.id === id) s.card.clear();
  }
  render();
}

function setLive(state) {
  liveState = state;
  const status = $("live-status");
  status.dataset.state = state;
  status.textContent = t(`live.${state}`);
}

function render() {
  if (!session) return;
  renderQueue(session.store, session.card.id);
  setTitle(session.store.unclaimed().length);
}

/** Redraw everything drawn from data, in the language just chosen. */
function relabel() {
  setLive(liveState);
  if (!session) {
    setTitle(0);
    return;
  }
  const { me } = session;
  $("whoami").textContent = t("whoami", {
    name: me.name,
    role: label("role", me.role),
    scope: me.scope_path ?? t("scope.all"),
  });
  render();
  session.card.render();
}

function select(id) {
  const s = session;
  const incident = s?.store.get(id);
  if (!incident) return;
  showNotice("");
  if (s.card.id !== id) s.card.show(incident);
  render();
  document.querySelector(`li.incident[data-id="${id}"]`)?.scrollIntoView({ block: "nearest" });
}

/** Move the selection `by` entries through the lists as shown (unclaimed, mine, others). */
function step(by) {
  if (!session) return;
  const entries = [...document.querySelectorAll("#queue li.incident")];
  if (!entries.length) return;
  const at = entries.findIndex((li) => Number(li.dataset.id) === session.card.id);
  const next = at < 0 ? (by > 0 ? 0 : entries.length - 1) : at + by;
  if (next >= 0 && next < entries.length) select(Number(entries[next].dataset.id));
}

function focusIfEnabled(id) {
  const input = $(id);
  if (session && !input.disabled) input.focus();
}

function toggleHelp() {
  $("keys-help").hidden = !$("keys-help").hidden;
}

/** What each action posts; null (with a notice) when the dispatcher left out a field. */
function body(action) {
  switch (action) {
    case "acknowledge":
      return {};
    case "dispatch": {
      const to = $("dispatch-to").value.trim();
      if (!to) return missing("dispatch-to", "action.need_dispatch_to");
      return { dispatched_to: to };
    }
    case "resolve": {
      // A note written before resolving goes with the resolution (log and notes).
      const notes = $("note-text").value.trim();
      return notes ? { outcome: $("outcome").value, notes } : { outcome: $("outcome").value };
    }
    case "note": {
      const text = $("note-text").value.trim();
      if (!text) return missing("note-text", "action.need_note");
      return { text };
    }
    default:
      return undefined;
  }
}

function missing(inputId, key) {
  showNotice(t(key));
  $(inputId).focus();
  return null;
}

async function act(action) {
  const s = session;
  if (!s) return;
  if (s.card.busy) {
    // Keyboard-first: `c` then `a` typed quickly must not lose the `a`.
    s.pending = action;
    return;
  }
  if (!s.card.enabled(action)) return;
  const id = s.card.id;
  const payload = body(action);
  if (payload === null) return;
  s.card.setBusy(true);
  try {
    const incident = await s.api.post(`/incidents/${id}/${action === "note" ? "notes" : action}`, payload);
    if (s !== session) return;
    showNotice("");
    // Shown at once from the answer; the stream's copy of the change follows later.
    s.store.upsert(incident);
    s.card.update(incident);
    if (action === "dispatch") $("dispatch-to").value = "";
    if (action === "note" || action === "resolve") $("note-text").value = "";
    render();
  } catch (err) {
    if (s === session) await refused(s, id, action, err);
  } finally {
    s.card.setBusy(false);
  }
  const next = s.pending;
  s.pending = null;
  if (next && s === session) await act(next);
}

/** Say why an action failed and bring the incident up to date. */
async function refused(s, id, action, err) {
  if (!(err instanceof ApiError)) throw err;
  if (err.status === 401 || err.status === 403) {
    signOut(t("notice.signed_out", { detail: err.detail }));
    return;
  }
  if (err.status === 404) {
    showNotice(`${t("notice.vanished")} ${err.detail}`);
    s.store.remove(id);
    if (s.card.id === id) s.card.clear();
    render();
    return;
  }
  if (err.status === 0) {
    showNotice(t("notice.unreachable", { detail: err.detail }));
    return;
  }
  if (err.status !== 409) {
    showNotice(t("notice.failed", { detail: err.detail }));
    return;
  }
  const holder = claimant(err.detail);
  showNotice(holder ? `${t("incident.taken_by", { name: holder })} — ${err.detail}` : err.detail);
  let incident;
  try {
    incident = await s.api.get(`/incidents/${id}`);
  } catch {
    return;
  }
  if (s !== session) return;
  s.store.upsert(incident);
  s.card.update(incident);
  render();
  // A lost claim whose reason did not name the winner: name them from the incident.
  if (action === "claim" && !holder && incident.claimed_by && incident.claimed_by !== s.me.name) {
    showNotice(`${t("incident.taken_by", { name: incident.claimed_by })} — ${err.detail}`);
  }
}

/** Who holds the incident, from a 409's detail ("… already claimed by Wang (now …)",
 * "… is claimed by Wang; Li may not …"); null when it names nobody. */
function claimant(detail) {
  const match = /already claimed by (.+) \(now [a-z_]+\)$/.exec(detail) ??
    /is claimed by (.+?); .+ may not [a-z_]+ it$/.exec(detail);
  return match ? match[1] : null;
}

function showNotice(text) {
  $("notice").textContent = text;
}

start();
