// Signals in the timeline: what `signal_awaited` and `signal_received` say, and, while a
// step waits, a form under its `signal_awaited` row that sends the signal
// (`POST /v1/executions/{id}/signals/{name}`) with the user's token. The form goes when
// the tail says the wait is over; the server decides who may send what.

import { el, when } from "./elements.js";
import { json } from "./event_parts.js";
import { TERMINAL } from "./tail.js";

/** What ends a step's attempt, and with it the attempt's wait. */
const STEP_ENDS = new Set([
  "step_completed",
  "step_failed",
  "step_retrying",
  "step_timed_out",
  "step_cancelled",
  "step_skipped",
]);

/** The line a signal event's row shows: what is awaited, or who sent what. */
export function signalDetail(type, data) {
  if (type === "signal_awaited") {
    const until = data.deadline ? ` · until ${when(data.deadline)}` : "";
    return `waits for signal “${data.signal}”${until}`;
  }
  const roles = data.roles?.length ? ` (${data.roles.join(", ")})` : "";
  return `“${data.signal}” from ${data.actor}${roles}: ${said(data.payload ?? {})}`;
}

function said(payload) {
  if (typeof payload.approved !== "boolean") return json(payload);
  const { approved, comment, ...rest } = payload;
  const parts = [approved ? "approved" : "rejected"];
  if (comment !== undefined && comment !== "") parts.push(`“${comment}”`);
  if (Object.keys(rest).length) parts.push(json(rest));
  return parts.join(" · ");
}

/** The open waits of one execution's timeline, each with its form. */
export class SignalForms {
  constructor(api, executionId, list, { onError }) {
    this.api = api;
    this.executionId = executionId;
    this.list = list;
    this.onError = onError;
    this.process = null; // {name, version}, from `execution_started`
    this.steps = null; // the definition's steps by id, once asked for
    this.waits = new Map(); // "step#attempt" → the wait, oldest first
  }

  /** Follow one tail event; `row` is its timeline row, when it has one of its own. */
  follow(event, row) {
    const { type, data } = event;
    const key = `${data.step_id}#${data.attempt}`;
    if (type === "execution_started") {
      this.process = { name: data.process_name, version: data.process_version };
    } else if (type === "signal_awaited" && row) {
      this.awaited(key, data, row);
    } else if (type === "signal_received") {
      if (row && verdict(data.payload)) row.dataset.verdict = verdict(data.payload);
      this.answered(data.signal);
    } else if (STEP_ENDS.has(type)) {
      this.end(key);
    } else if (TERMINAL.has(type)) {
      for (const open of [...this.waits.keys()]) this.end(open);
    }
  }

  async awaited(key, data, row) {
    const wait = { signal: data.signal, step: data.step_id, row, form: null };
    this.waits.set(key, wait);
    const { step, problem } = await this.definitionOf(data.step_id);
    if (this.waits.get(key) !== wait) return; // over before the definition came
    wait.form = new SignalForm(this, wait, step ?? {});
    const list = this.list;
    const following = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    row.append(wait.form.node);
    if (problem) wait.form.refused(problem);
    if (following) list.scrollTop = list.scrollHeight;
  }

  /** A signal arrived: the oldest wait for its name takes it (as the server decides). */
  answered(signal) {
    for (const [key, wait] of this.waits) {
      if (wait.signal === signal) {
        this.end(key);
        return;
      }
    }
  }

  end(key) {
    const wait = this.waits.get(key);
    if (!wait) return;
    this.waits.delete(key);
    wait.form?.node.remove();
  }

  /** The step's definition (its `schema`, `allowed_roles`), read once per timeline. */
  async definitionOf(stepId) {
    if (!this.process) return { step: null, problem: null };
    this.steps ??= this.api
      .get(`/v1/processes/${encodeURIComponent(this.process.name)}`, {
        version: this.process.version,
      })
      .then((view) => ({ steps: new Map(view.definition.steps.map((s) => [s.id, s])) }))
      .catch((error) => ({ steps: new Map(), problem: error }));
    const { steps, problem } = await this.steps;
    return { step: steps.get(stepId) ?? null, problem: problem ?? null };
  }

  /** POST the signal; the API's answer, or an `ApiError` (a 401 also ends the session). */
  async send(signal, payload) {
    const path = `/v1/executions/${this.executionId}/signals/${encodeURIComponent(signal)}`;
    try {
      return await this.api.post(path, { payload });
    } catch (error) {
      if (error.status === 401) this.onError(error);
      throw error;
    }
  }
}

/**
 * One wait's form: Approve and Reject (with a comment when the schema allows one) for a
 * schema with a boolean `approved`, a JSON box otherwise.
 */
class SignalForm {
  constructor(forms, wait, step) {
    this.forms = forms;
    this.wait = wait;
    this.schema = step.schema ?? null;
    this.approval = takesApproval(this.schema);
    const problem = { class: "problem", role: "alert", dataset: { testid: "signal-problem" } };
    this.problem = el("p", problem);
    this.problem.hidden = true;
    this.note = el("p", { class: "note", role: "status", dataset: { testid: "signal-note" } });
    this.fields = el(
      "fieldset",
      {},
      el("legend", {}, `Send “${wait.signal}” to step ${wait.step}`),
      ...(this.approval ? this.approvalFields() : this.jsonFields()),
    );
    this.node = el(
      "form",
      {
        class: "signal-form",
        "aria-label": `Send signal ${wait.signal}`,
        dataset: { testid: "signal-form", signal: wait.signal, step: wait.step, state: "open" },
      },
      this.fields,
      this.problem,
      this.note,
      el("p", { class: "roles" }, rolesText(step.allowed_roles)),
      this.schema && !this.approval ? shown(this.schema) : null,
    );
    this.node.addEventListener("submit", (event) => {
      event.preventDefault(); // nothing navigates: the page sends it itself
      this.submit(event.submitter?.value);
    });
  }

  approvalFields() {
    const fields = [];
    if (takesComment(this.schema)) {
      this.comment = el("textarea", {
        rows: 2,
        maxlength: 2000,
        placeholder: "Why (optional)",
        dataset: { testid: "signal-comment" },
      });
      fields.push(el("label", {}, "Comment", this.comment));
    }
    fields.push(
      el(
        "div",
        { class: "actions" },
        button("approve", "Approve", "signal-approve"),
        button("reject", "Reject", "signal-reject"),
      ),
    );
    return fields;
  }

  jsonFields() {
    this.box = el("textarea", {
      class: "json",
      rows: 5,
      spellcheck: "false",
      dataset: { testid: "signal-payload" },
    });
    this.box.value = "{}";
    return [
      el("label", {}, "Payload (a JSON object)", this.box),
      el("div", { class: "actions" }, button("send", "Send signal", "signal-send")),
    ];
  }

  /** `{payload}` the user asked for, or `{problem}`: why it cannot be sent. */
  read(choice) {
    if (this.approval) {
      const payload = { approved: choice === "approve" };
      const comment = this.comment?.value.trim();
      if (comment) payload.comment = comment;
      return { payload };
    }
    let payload;
    try {
      payload = JSON.parse(this.box.value);
    } catch (error) {
      return { problem: `Not JSON: ${error.message}` };
    }
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      return { problem: 'The payload must be a JSON object, e.g. {"amount": 5}' };
    }
    return { payload };
  }

  async submit(choice) {
    const { payload, problem } = this.read(choice);
    this.refused(problem);
    if (problem) return;
    this.fields.disabled = true;
    this.node.dataset.state = "sending";
    this.note.textContent = "Sending…";
    try {
      await this.forms.send(this.wait.signal, payload);
    } catch (error) {
      this.fields.disabled = false;
      this.node.dataset.state = "open";
      this.note.textContent = "";
      this.refused(String(error));
      return;
    }
    // the form goes once the tail shows the signal taken (`signal_received`, then the step)
    this.node.dataset.state = "sent";
    this.note.textContent = `Sent; step ${this.wait.step} takes it next.`;
  }

  /** Show why a send was refused (or nothing). */
  refused(problem) {
    this.problem.textContent = problem ? String(problem) : "";
    this.problem.hidden = !problem;
  }
}

function button(value, label, testid) {
  return el("button", { type: "submit", value, class: value, dataset: { testid } }, label);
}

/** The schema the payload must fit, folded. */
function shown(schema) {
  const text = JSON.stringify(schema, null, 2);
  return el("details", {}, el("summary", {}, "Payload schema"), el("pre", {}, text));
}

function takesApproval(schema) {
  const type = schema?.properties?.approved?.type;
  return type === "boolean" || (Array.isArray(type) && type.includes("boolean"));
}

/** A comment fits when the schema names one, or does not forbid properties it omits. */
function takesComment(schema) {
  const comment = schema?.properties?.comment;
  if (comment !== undefined) return comment !== false;
  return schema?.additionalProperties !== false;
}

function verdict(payload) {
  if (typeof payload?.approved !== "boolean") return "";
  return payload.approved ? "approved" : "rejected";
}

function rolesText(roles = ["user", "admin"]) {
  const who = roles.map((role) => (role === "user" ? "the execution's owner" : "an admin"));
  return `May be sent by ${who.join(" or ")}.`;
}
