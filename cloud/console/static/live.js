// The live stream GET /incidents/live read with fetch() rather than EventSource, which
// cannot send the Authorization header. Reconnects by itself: 1 s after a drop, doubling
// to 10 s, back to 1 s after each hello.

import { problemDetail } from "./api.js";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 10000;
// The server sends a keepalive every 15 s; silence well past that means the connection
// died without closing (a cable pulled, a laptop asleep), so drop it and reconnect.
const SILENCE_MS = 40000;
const LONG_STREAM_MS = 30000;

export class LiveFeed {
  /**
   * handlers: hello(data), incident(summary), resync(), state("live" | "reconnecting"),
   * denied(detail) when the key is refused (then the feed stops).
   */
  constructor(key, handlers) {
    this.key = key;
    this.handlers = handlers;
    this.stopper = new AbortController();
  }

  start() {
    this.#run();
  }

  stop() {
    this.stopper.abort();
  }

  async #run() {
    let delay = FIRST_DELAY_MS;
    while (!this.stopper.signal.aborted) {
      const opened = Date.now();
      try {
        const outcome = await this.#connect(() => { delay = FIRST_DELAY_MS; });
        if (outcome === "denied") return;
        // The server ends every stream after its lifetime (5 min): reconnect at once,
        // without showing a drop. A stream ended sooner (a server shutting down) waits.
        if (outcome === "ended" && Date.now() - opened >= LONG_STREAM_MS) continue;
      } catch {
        // A network error or a dropped stream: reconnect below.
      }
      if (this.stopper.signal.aborted) return;
      this.handlers.state("reconnecting");
      await sleep(delay, this.stopper.signal);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  /** One connection, read until it ends; "denied" when the key was refused. */
  async #connect(onHello) {
    const connection = new AbortController();
    const abort = () => connection.abort();
    this.stopper.signal.addEventListener("abort", abort);
    let watchdog = setTimeout(abort, SILENCE_MS);
    try {
      const response = await fetch("/incidents/live", {
        headers: { Authorization: `Bearer ${this.key}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: connection.signal,
      });
      if (response.status === 401 || response.status === 403) {
        this.handlers.denied(await problemDetail(response));
        return "denied";
      }
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
      for await (const message of messages(response.body, () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(abort, SILENCE_MS);
      })) {
        this.#deliver(message, onHello);
      }
      return "ended";
    } finally {
      clearTimeout(watchdog);
      this.stopper.signal.removeEventListener("abort", abort);
      connection.abort();
    }
  }

  #deliver({ event, data }, onHello) {
    if (event === "hello") {
      onHello();
      this.handlers.state("live");
      this.handlers.hello(JSON.parse(data || "{}"));
    } else if (event === "incident") {
      this.handlers.incident(JSON.parse(data));
    } else if (event === "resync") {
      this.handlers.resync();
    }
  }
}

/** The server-sent events of `body` as {event, data}; `onChunk` runs on every chunk read. */
async function* messages(body, onChunk) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onChunk();
      buffer += value;
      // A "\r" ending the chunk may be the first half of "\r\n": leave it to the next.
      const lines = buffer.split(/\r\n|\r(?!$)|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
