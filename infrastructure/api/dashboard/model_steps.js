// A model agent's attempts in the timeline: answer, reasoning and tool calls as blocks.

import { el, milliseconds, shorten } from "./elements.js";
import { attempt, errorText, heading, json } from "./event_parts.js";
import { TERMINAL } from "./tail.js";

/**
 * A model agent's attempt as it streams: its answer is one block that grows with each
 * `agent_output_delta`, its reasoning a collapsed block, each tool call one row from
 * `tool_executing` to `tool_completed` or `tool_failed`. A retried attempt gets its own.
 */
export class ModelSteps {
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

function plus(total, part) {
  return total === null || part === null || part === undefined ? null : total + part;
}
