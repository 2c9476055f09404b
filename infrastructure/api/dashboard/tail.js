// A resumable subscription to the live tail `/v1/stream` (docs/tail-protocol.md): on a
// dropped connection it reconnects with `after=<last position seen>`, so no event is missed
// or repeated.

const FATAL = new Map([
  [4400, "Bad request"],
  [4401, "Unauthenticated"],
  [4403, "Forbidden"],
  [4404, "Not found"],
]);
const MAX_DELAY_MS = 10000;

export const TERMINAL = new Set([
  "execution_completed",
  "execution_failed",
  "execution_cancelled",
  "execution_timed_out",
]);

/** What an agent streams while it works: none of it changes a status, so none is re-read. */
export const QUIET = new Set([
  "agent_output_delta",
  "agent_thinking",
  "tool_executing",
  "tool_completed",
  "tool_failed",
]);

export class Tail {
  /**
   * `params`: query parameters (`execution_id`, `after`, ...); `onEvent(message)` for each
   * event; `onOpen(resumed)` once connected; `onState("live" | "reconnecting" | "closed")`;
   * `onFatal(text, code)` when the server refuses for good (bad token, unknown execution).
   */
  constructor(token, params, { onEvent, onOpen = () => {}, onState = () => {}, onFatal }) {
    this.token = token;
    this.params = { ...params };
    this.last = params.after ?? null;
    this.handlers = { onEvent, onOpen, onState, onFatal };
    this.failures = 0;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  connect() {
    const query = new URLSearchParams(this.params);
    if (this.last === null) query.delete("after");
    else query.set("after", this.last);
    query.set("access_token", this.token); // a browser WebSocket cannot send a header
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/v1/stream?${query}`);
    const resumed = this.last !== null;
    this.socket = socket;
    socket.onopen = () => {
      this.failures = 0;
      this.handlers.onState("live");
      this.handlers.onOpen(resumed);
    };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      this.last = event.position; // heartbeats carry a safe resume point too
      if (event.type !== "heartbeat") this.handlers.onEvent(event);
    };
    socket.onclose = (closed) => this.closed(socket, closed);
  }

  closed(socket, { code, reason }) {
    if (this.stopped || socket !== this.socket) return;
    if (FATAL.has(code)) {
      this.stopped = true;
      this.handlers.onState("closed");
      this.handlers.onFatal(`${FATAL.get(code)} (${code}): ${reason || "refused"}`, code);
      return;
    }
    // 1012 restart, 4408 too slow, 4429 too many, 1006 network: resume after a pause
    this.failures += 1;
    this.handlers.onState("reconnecting");
    const delay = Math.min(MAX_DELAY_MS, 250 * 2 ** Math.min(this.failures, 6));
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
