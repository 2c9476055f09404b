// One execution's events in order: its history, then live while it runs, from the tail.

import { LatestRead } from "./api.js";
import { clock, el, milliseconds } from "./elements.js";
import { TERMINAL, Tail } from "./tail.js";

export class Timeline {
  constructor(api, { onError }) {
    this.api = api;
    this.onError = onError;
    this.tail = null;
    this.id = null;
    this.reader = null;
    this.hint = document.getElementById("timeline-hint");
    this.body = document.getElementById("timeline-body");
    this.events = document.getElementById("events");
    this.steps = document.getElementById("step-rows");
    this.status = document.getElementById("timeline-status");
    this.hint.hidden = false;
    this.body.hidden = true;
  }

  show(id) {
    this.close();
    this.id = id;
    this.hint.hidden = true;
    this.body.hidden = false;
    document.getElementById("timeline-id").textContent = id;
    this.events.replaceChildren();
    this.steps.replaceChildren();
    this.setStatus("…");
    this.reader = new LatestRead((after) => this.readSteps(id, after));
    this.reader.request(0);
    // after=0: the server replays the history from the store, then goes live with no gap
    this.tail = new Tail(this.api.token, { execution_id: id, after: 0 }, {
      onEvent: (event) => this.append(event),
      onFatal: (text) => this.onError(text),
    }).start();
  }

  close() {
    if (this.tail) this.tail.stop();
    this.tail = null;
    this.id = null;
  }

  append(event) {
    const list = this.events;
    const following = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.append(
      el(
        "li",
        {
          dataset: {
            testid: "timeline-event",
            type: event.type,
            position: event.position,
            version: event.version,
            step: event.data.step_id ?? "",
          },
        },
        el("time", { datetime: event.timestamp }, clock(event.timestamp)),
        el("span", { class: "type" }, event.type),
        el("span", { class: "step" }, step(event.data)),
        el("span", { class: "detail" }, detail(event.type, event.data)),
      ),
    );
    if (following) list.scrollTop = list.scrollHeight; // keep up, unless the reader scrolled up
    if (event.data.step_id !== undefined || TERMINAL.has(event.type)) {
      this.reader.request(event.position);
    }
    if (TERMINAL.has(event.type)) this.tail.stop(); // nothing follows a terminal event
  }

  async readSteps(id, after) {
    const view = await this.api.get(`/v1/executions/${id}`, { after }).catch(this.onError);
    if (view && id === this.id) this.render(view);
  }

  render(view) {
    this.setStatus(view.status);
    this.steps.replaceChildren(
      ...view.steps.map((s) =>
        el(
          "tr",
          { dataset: { testid: "step-row", step: s.id } },
          el("th", { scope: "row" }, s.id),
          el("td", {}, s.agent ?? "–"),
          el("td", {}, el("span", { class: "status", dataset: { status: s.status } }, s.status)),
          el("td", {}, String(s.attempt)),
          el("td", {}, milliseconds(s.duration_ms)),
        ),
      ),
    );
  }

  setStatus(status) {
    this.status.textContent = status.replace("_", " ");
    this.status.dataset.status = status;
  }
}

function step(data) {
  if (data.step_id === undefined) return "";
  return data.attempt > 1 ? `${data.step_id} #${data.attempt}` : data.step_id;
}

/** The one line that says what happened. */
function detail(type, data) {
  const parts = [];
  if (data.agent) parts.push(`agent ${typeof data.agent === "string" ? data.agent : "http"}`);
  if (data.tool) parts.push(data.tool);
  if (data.message) parts.push(data.message);
  if (data.reason) parts.push(String(data.reason));
  if (data.error) parts.push(typeof data.error === "string" ? data.error : JSON.stringify(data.error));
  if (data.duration_ms !== undefined) parts.push(milliseconds(Number(data.duration_ms)));
  if (type === "execution_started") parts.push(`${data.process_name} v${data.process_version}`);
  const text = parts.join(" · ");
  return text.length > 240 ? `${text.slice(0, 239)}…` : text;
}
