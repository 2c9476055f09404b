// One execution's events in order: its history, then live while it runs, from the tail.
// A model step's attempt folds what it streams into blocks (see `ModelSteps`); every
// other event is one row. A step waiting for a signal has a form to send it under its
// `signal_awaited` row (see `SignalForms`). Its lineage (the execution it was forked from, its
// forks) and its Resume and Fork controls sit above the steps (see `Lineage`); a failed,
// timed-out or cancelled execution may be resumed, so its timeline keeps following it.

import { LatestRead } from "./api.js";
import { el, milliseconds, shorten, spending, tokens, usd } from "./elements.js";
import { errorText, heading } from "./event_parts.js";
import { Lineage, lineageDetail } from "./lineage_controls.js";
import { ModelSteps } from "./model_steps.js";
import { SignalForms, signalDetail } from "./signal_form.js";
import { QUIET, TERMINAL, Tail } from "./tail.js";

/** Events that change the execution's status or lineage without naming a step. */
const LINEAGE = new Set(["execution_resumed", "execution_forked"]);

export class Timeline {
  constructor(api, { onError }) {
    this.api = api;
    this.onError = onError;
    this.tail = null;
    this.id = null;
    this.reader = null;
    this.model = null;
    this.signals = null;
    this.lineage = null;
    this.view = null;
    this.hint = document.getElementById("timeline-hint");
    this.body = document.getElementById("timeline-body");
    this.events = document.getElementById("events");
    this.steps = document.getElementById("step-rows");
    this.status = document.getElementById("timeline-status");
    this.cost = document.getElementById("timeline-cost");
    this.hint.hidden = false;
    this.body.hidden = true;
  }

  show(id) {
    this.close();
    this.id = id;
    this.view = null;
    this.hint.hidden = true;
    this.body.hidden = false;
    document.getElementById("timeline-id").textContent = id;
    this.events.replaceChildren();
    this.steps.replaceChildren();
    this.model = new ModelSteps(this.events);
    this.signals = new SignalForms(this.api, id, this.events, { onError: this.onError });
    this.lineage = new Lineage(this.api, id, document.getElementById("lineage"), {
      open: (other) => this.show(other),
      onError: this.onError,
    });
    this.setStatus("…");
    this.showCost();
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
    this.lineage?.close();
    this.tail = null;
    this.id = null;
  }

  append(event) {
    const list = this.events;
    const following = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    const drawn = this.model.fold(event) ? null : row(event);
    if (drawn) list.append(drawn);
    this.signals.follow(event, drawn);
    this.lineage.follow(event);
    if (following) list.scrollTop = list.scrollHeight; // keep up, unless the reader scrolled up
    if (event.type === "llm_call_completed") this.showCost();
    if (
      (event.data.step_id !== undefined && !QUIET.has(event.type)) ||
      TERMINAL.has(event.type) ||
      LINEAGE.has(event.type)
    ) {
      this.reader.request(event.position);
    }
    // nothing follows a completion; a failed, timed-out or cancelled execution may be resumed
    if (event.type === "execution_completed") this.tail.stop();
  }

  async readSteps(id, after) {
    const view = await this.api.get(`/v1/executions/${id}`, { after }).catch(this.onError);
    if (view && id === this.id) this.render(view);
  }

  render(view) {
    this.view = view;
    this.setStatus(this.lineage.status(view));
    this.lineage.render(view);
    this.showCost();
    this.steps.replaceChildren(
      ...view.steps.map((s) =>
        el(
          "tr",
          { dataset: { testid: "step-row", step: s.id } },
          el("th", { scope: "row" }, s.id),
          el("td", {}, s.agent ?? "–"),
          el(
            "td",
            {},
            el("span", { class: "status", dataset: { status: s.status } }, s.status),
            s.copied ? copiedMark() : null,
          ),
          el("td", {}, String(s.attempt)),
          el("td", {}, milliseconds(s.duration_ms)),
        ),
      ),
    );
  }

  setStatus(status) {
    this.status.textContent = status.replace("_", " ");
    this.status.dataset.status = status;
    this.lineage?.statusIs(status);
  }

  /** The execution's model spend: the status view's once it has one, else the tail's sum. */
  showCost() {
    const figures = this.view && "cost_usd" in this.view ? this.view : this.model.spent();
    const text = spending(figures);
    this.cost.textContent = text;
    this.cost.parentElement.hidden = text === "–";
  }
}

/** A step of a fork that did not run: the parent's output stands in for it. */
function copiedMark() {
  const title = "not run here: its output was copied from the execution this one forks";
  return el("span", { class: "copied", title, dataset: { testid: "step-copied" } }, "copied");
}

function row(event) {
  return el(
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
    ...heading(event, event.type),
    el("span", { class: "detail" }, detail(event.type, event.data)),
  );
}

/** The one line that says what happened. */
function detail(type, data) {
  if (type === "signal_awaited" || type === "signal_received") {
    return shorten(signalDetail(type, data), 240);
  }
  if (LINEAGE.has(type)) return shorten(lineageDetail(type, data), 240);
  if (type === "llm_call_completed") {
    const took = milliseconds(Number(data.duration_ms));
    return [data.model, tokens(data), took, usd(data.cost_usd)].join(" · ");
  }
  const parts = [];
  if (data.agent) parts.push(`agent ${typeof data.agent === "string" ? data.agent : "http"}`);
  if (data.tool) parts.push(data.tool);
  if (data.message) parts.push(data.message);
  if (data.reason) parts.push(String(data.reason));
  if (data.error) parts.push(errorText(data.error));
  if (data.duration_ms !== undefined) parts.push(milliseconds(Number(data.duration_ms)));
  if (data.usage) parts.push(spending(data.usage));
  if (type === "execution_started") parts.push(`${data.process_name} v${data.process_version}`);
  return shorten(parts.join(" · "), 240);
}
