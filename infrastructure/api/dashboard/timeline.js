// One execution's events in order: its history, then live while it runs, from the tail.
// A model step's attempt folds what it streams into blocks (see `ModelSteps`); every
// other event is one row.

import { LatestRead } from "./api.js";
import { clock, el, milliseconds } from "./elements.js";
import { QUIET, TERMINAL, Tail } from "./tail.js";

export class Timeline {
  constructor(api, { onError }) {
    this.api = api;
    this.onError = onError;
    this.tail = null;
    this.id = null;
    this.reader = null;
    this.model = null;
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
    this.tail = null;
    this.id = null;
  }

  append(event) {
    const list = this.events;
    const following = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    if (!this.model.fold(event)) list.append(row(event));
    if (following) list.scrollTop = list.scrollHeight; // keep up, unless the reader scrolled up
    if (event.type === "llm_call_completed") this.showCost();
    if ((event.data.step_id !== undefined && !QUIET.has(event.type)) || TERMINAL.has(event.type)) {
      this.reader.request(event.position);
    }
    if (TERMINAL.has(event.type)) this.tail.stop(); // nothing follows a terminal event
  }

  async readSteps(id, after) {
    const view = await this.api.get(`/v1/executions/${id}`, { after }).catch(this.onError);
    if (view && id === this.id) this.render(view);
  }

  render(view) {
    this.view = view;
    this.setStatus(view.status);
    this.showCost();
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

  /** The execution's model spend: the status view's once it has one, else the tail's sum. */
  showCost() {
    const figures = this.view && "cost_usd" in this.view ? this.view : this.model.spent();
    const text = spending(figures);
    this.cost.textContent = text;
    this.cost.parentElement.hidden = text === "–";
  }
}

/**
 * A model agent's attempt as it streams: its answer is one block that grows with each
 * `agent_output_delta`, its reasoning a collapsed block, each tool call one row from
 * `tool_executing` to `tool_completed` or `tool_failed`. A retried attempt gets its own.
 */
class ModelSteps {
  constructor(list) {
    this.list = list;
    this.attempts = new Set(); // "step#attempt" of model agents
    this.answers = new Map(); // "step#attempt" → its answer block
    this.calls = new Map(); // call_id → its row
    this.thought = null; // the reasoning block last drawn
    this.totals = { model_calls: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 };
  }

  /** Draw `event` into a block; false when it is a row of its own. */
  fold(event) {
    const { type, data } = event;
    const key = `${data.step_id}#${data.attempt}`;
    if (type === "agent_started" && String(data.agent).startsWith("llm:")) this.attempts.add(key);
    if (type === "llm_call_completed") this.count(data);
    this.end(type, key);
    if (type === "agent_output_delta") this.answer(event, key);
    else if (!this.attempts.has(key)) return false;
    else if (type === "agent_thinking") this.think(event, key);
    else if (type === "tool_executing") this.toolStarted(event);
    else if (type === "tool_completed" || type === "tool_failed") this.toolEnded(event);
    else return false;
    return true;
  }

  answer(event, key) {
    const { data } = event;
    let block = this.answers.get(key);
    if (!block) {
      const text = document.createTextNode("");
      const marks = { ...attempt(data), testid: "agent-output", state: "streaming" };
      const node = el(
        "li",
        { class: "answer", dataset: marks },
        ...heading(event, "answer"),
        el("div", { class: "text", dataset: { testid: "agent-output-text" } }, text),
      );
      block = { node, text, next: 0 };
      this.answers.set(key, block);
      this.list.append(node);
    }
    if (data.index < block.next) return; // already drawn
    block.next = data.index + 1;
    block.text.appendData(String(data.text)); // text, never markup
    block.node.dataset.position = event.position;
  }

  think(event, key) {
    const { data } = event;
    let block = this.thought;
    if (!block || block.key !== key || this.list.lastElementChild !== block.node) {
      const text = document.createTextNode("");
      const summary = el("span", { class: "preview" });
      const node = el(
        "li",
        { class: "thinking", dataset: { ...attempt(data), testid: "agent-thinking" } },
        ...heading(event, "reasoning"),
        el("details", {}, el("summary", {}, summary), el("div", { class: "text" }, text)),
      );
      block = this.thought = { key, node, text, summary };
      this.list.append(node);
    }
    block.text.appendData(String(data.message));
    block.summary.textContent = block.text.data.slice(0, 200);
  }

  toolStarted(event) {
    const { data } = event;
    const args = json(data.args);
    const took = el("span", { class: "took" });
    const outcome = el("div", { class: "outcome" });
    const marks = { ...attempt(data), testid: "tool-call", callId: data.call_id, tool: data.tool };
    const node = el(
      "li",
      { class: "tool", dataset: { ...marks, state: "running" } },
      ...heading(event, "tool call"),
      el(
        "span",
        { class: "detail" },
        el("span", { class: "tool-name" }, data.tool),
        " ",
        el("code", { class: "args", title: args }, shorten(args, 120)),
        took,
      ),
      outcome,
    );
    this.calls.set(data.call_id, { node, took, outcome });
    this.list.append(node);
  }

  toolEnded(event) {
    const { type, data } = event;
    if (!this.calls.has(data.call_id)) this.toolStarted(event);
    const { node, took, outcome } = this.calls.get(data.call_id);
    const failed = type === "tool_failed";
    const said = failed ? errorText(data.error) : json(data.result);
    node.dataset.state = failed ? "failed" : "completed";
    took.textContent = ` · ${milliseconds(Number(data.duration_ms))}`;
    outcome.title = said;
    outcome.textContent = `${failed ? "✗" : "→"} ${shorten(said, 240)}`;
  }

  /** An attempt that ended: its answer is final. */
  end(type, key) {
    const ended = ENDS.get(type);
    if (!ended) return;
    const blocks = TERMINAL.has(type) ? [...this.answers.values()] : [this.answers.get(key)];
    for (const block of blocks) {
      if (block?.node.dataset.state === "streaming") block.node.dataset.state = ended;
    }
  }

  count(data) {
    const t = this.totals;
    t.model_calls += 1;
    t.prompt_tokens = plus(t.prompt_tokens, data.prompt_tokens);
    t.completion_tokens = plus(t.completion_tokens, data.completion_tokens);
    t.cost_usd = plus(t.cost_usd, data.cost_usd);
  }

  spent() {
    return this.totals;
  }
}

const ENDS = new Map([
  ["agent_completed", "done"],
  ["agent_failed", "failed"],
  ["step_timed_out", "failed"],
  ["step_cancelled", "stopped"],
  ...[...TERMINAL].map((type) => [type, "stopped"]),
]);

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

function heading(event, label) {
  return [
    el("time", { datetime: event.timestamp }, clock(event.timestamp)),
    el("span", { class: "type" }, label),
    el("span", { class: "step" }, step(event.data)),
  ];
}

function attempt(data) {
  return { step: data.step_id, attempt: data.attempt };
}

function step(data) {
  if (data.step_id === undefined) return "";
  return data.attempt > 1 ? `${data.step_id} #${data.attempt}` : data.step_id;
}

/** The one line that says what happened. */
function detail(type, data) {
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

/** `{prompt_tokens, completion_tokens}` as "600 in / 120 out tokens". */
export function tokens({ prompt_tokens: p, completion_tokens: c }) {
  const count = (n) => (n === null || n === undefined ? "?" : n.toLocaleString());
  return `${count(p)} in / ${count(c)} out tokens`;
}

/** A cost in USD: cents from a dollar up, two significant digits below; null is unknown. */
export function usd(value) {
  if (value === null || value === undefined) return "cost unknown";
  if (value >= 1) return `$${value.toFixed(2)}`;
  const digits = value > 0 ? Math.min(10, Math.max(2, 1 - Math.floor(Math.log10(value)))) : 2;
  return `$${value.toFixed(digits)}`;
}

/** Model use (`{model_calls, prompt_tokens, completion_tokens, cost_usd}`) on one line. */
export function spending(figures) {
  const calls = figures?.model_calls;
  if (!calls) return "–";
  return [`${calls} model call${calls === 1 ? "" : "s"}`, tokens(figures), usd(figures.cost_usd)]
    .join(" · ");
}

function plus(total, part) {
  return total === null || part === null || part === undefined ? null : total + part;
}

function json(value) {
  return value === undefined ? "" : JSON.stringify(value) ?? String(value);
}

function errorText(error) {
  if (typeof error === "string") return error;
  if (!error?.message) return JSON.stringify(error);
  return error.type ? `${error.type}: ${error.message}` : error.message;
}

function shorten(text, most) {
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}
