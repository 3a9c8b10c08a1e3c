// The incidents this page knows, merged from queue reloads, the live stream and the
// answers to actions. Each source may be older than another (a reload answered after
// a stream message), so the newest `updated_at` wins and a closed incident stays gone.

const CLOSED = new Set(["resolved", "false_alarm"]);

export function isClosed(incident) {
  return CLOSED.has(incident.status);
}

function urgency(a, b) {
  return a.priority - b.priority || Date.parse(a.opened_at) - Date.parse(b.opened_at) || a.id - b.id;
}

export class IncidentStore {
  constructor(me) {
    this.me = me;
    this.items = new Map();
    this.closed = new Set();
    this.seen = new Set();
    // When (performance.now()) each incident last came from the stream or an action,
    // so a reload asked for before that does not drop it.
    this.touched = new Map();
  }

  get(id) {
    return this.items.get(id);
  }

  /** Take in one incident (summary or detail); false when an older copy was ignored. */
  upsert(incident) {
    const { id } = incident;
    this.seen.add(id);
    this.touched.set(id, performance.now());
    if (isClosed(incident)) {
      this.closed.add(id);
      this.items.delete(id);
      return true;
    }
    if (this.closed.has(id) || !isNewer(incident, this.items.get(id))) return false;
    this.items.set(id, incident);
    return true;
  }

  remove(id) {
    this.items.delete(id);
  }

  /**
   * Replace the lists with a reload asked for at `since`; answers the incidents never
   * seen before on this page.
   */
  replace(incidents, since) {
    const fresh = new Map();
    for (const incident of incidents) {
      if (this.closed.has(incident.id)) continue;
      const known = this.items.get(incident.id);
      fresh.set(incident.id, known && !isNewer(incident, known) ? known : incident);
    }
    for (const [id, known] of this.items) {
      if (!fresh.has(id) && this.touched.get(id) > since) fresh.set(id, known);
    }
    const unseen = incidents.filter((incident) => !this.seen.has(incident.id));
    for (const incident of incidents) this.seen.add(incident.id);
    this.items = fresh;
    return unseen;
  }

  /** Open incidents, the most urgent (priority 1) first, then the longest waiting. */
  unclaimed() {
    return [...this.items.values()].filter((i) => i.status === "open").sort(urgency);
  }

  /** Incidents this dispatcher holds. */
  mine() {
    return [...this.items.values()]
      .filter((i) => i.status !== "open" && i.claimed_by === this.me)
      .sort(urgency);
  }

  /** Incidents someone else holds. */
  others() {
    return [...this.items.values()]
      .filter((i) => i.status !== "open" && i.claimed_by !== this.me)
      .sort(urgency);
  }
}

function isNewer(incident, known) {
  return !known || Date.parse(incident.updated_at) >= Date.parse(known.updated_at);
}
