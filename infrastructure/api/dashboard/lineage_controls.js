// Lineage in the timeline: where an execution comes from (the execution it was forked from,
// and at which step), what was forked from it, how often it was resumed; a Resume form while
// it is failed, timed out or cancelled (`POST /v1/executions/{id}/resume`), and a Fork form
// (a step, and the input to start with) that opens the new execution
// (`POST /v1/executions/{id}/fork`). The server decides who may do either: its refusal shows
// next to the control.

import { el, shortId } from "./elements.js";
import { TERMINAL } from "./tail.js";

export const RESUMABLE = new Set(["failed", "timed_out", "cancelled"]);
const FINISHED = new Set(["completed", ...RESUMABLE]);

/** The line an `execution_resumed` or `execution_forked` row shows. */
export function lineageDetail(type, data) {
  if (type === "execution_resumed") {
    const again = data.steps?.length ? ` · runs again: ${data.steps.join(", ")}` : "";
    return `resumed by ${data.actor}: “${data.reason}”${again}`;
  }
  const copied = Object.keys(data.copied ?? {});
  const kept = copied.length ? `copied: ${copied.join(", ")}` : "nothing copied";
  const parent = `${data.parent_id} (v${data.parent_version})`;
  return `fork of ${parent} from step ${data.from_step} · ${kept}`;
}

/** One timeline's lineage, drawn into `node`; `open(id)` shows another execution's timeline. */
export class Lineage {
  constructor(api, executionId, node, { open, onError }) {
    this.api = api;
    this.executionId = executionId;
    this.open = open;
    this.onError = onError;
    this.closed = false;
    this.parent = null; // {id, step}, from `execution_forked` or the status view
    this.resumes = { tail: 0, view: 0 }; // the view's count once it has one; the tail's live
    this.resumedAt = -1; // positions on the tail: is the execution running again?
    this.endedAt = -1;
    this.stepIds = "";
    this.origin = el("p", { class: "origin", dataset: { testid: "lineage-parent" } });
    this.forks = el("p", { class: "forks", dataset: { testid: "lineage-children" } });
    this.resumed = el("p", { class: "resumes muted", dataset: { testid: "lineage-resumes" } });
    this.resume = new ResumeForm(this);
    this.fork = new ForkForm(this);
    for (const part of [this.origin, this.forks, this.resumed]) part.hidden = true;
    node.replaceChildren(this.origin, this.forks, this.resumed, this.resume.node, this.fork.node);
  }

  close() {
    this.closed = true;
  }

  /** Follow one tail event of the execution. */
  follow({ type, data, position }) {
    if (type === "execution_started") {
      this.fork.prefill(data.input); // what a fork starts with, unless the user edits it
    } else if (type === "execution_forked") {
      this.showParent(data.parent_id, data.from_step);
    } else if (type === "execution_resumed") {
      this.resumedAt = position;
      this.resumes.tail += 1;
      this.showResumes();
    } else if (TERMINAL.has(type)) {
      this.endedAt = position;
    }
  }

  /** The status to show for a status view: a finished one the tail has seen resumed since
   * (a view that does not know resumes yet) runs again. */
  status(view) {
    if (FINISHED.has(view.status) && this.resumedAt > this.endedAt) return "pending";
    return view.status;
  }

  /** What the status view says: its steps, and its lineage when it knows it. */
  render(view) {
    if (view.parent_id) this.showParent(view.parent_id, view.forked_from_step);
    if (typeof view.resumes === "number") {
      this.resumes.view = view.resumes;
      this.showResumes();
    }
    if (Array.isArray(view.children)) this.showChildren(view.children, view.more_children);
    const ids = view.steps.map((s) => s.id);
    if (ids.join("\n") !== this.stepIds) {
      this.stepIds = ids.join("\n");
      this.fork.offer(view.steps);
    }
  }

  /** The execution's status changed (as shown): Resume only while it can be resumed. */
  statusIs(status) {
    this.resume.show(RESUMABLE.has(status));
  }

  showParent(id, step) {
    if (this.parent?.id === id && (this.parent.step || !step)) return;
    this.parent = { id, step };
    const at = step ? [" at step ", el("code", {}, step)] : [];
    this.origin.replaceChildren("Forked from ", this.link(id, "lineage-parent-link"), ...at);
    this.origin.hidden = false;
  }

  showChildren(ids, more) {
    const links = ids.flatMap((id, i) => [i ? ", " : "", this.link(id, "lineage-child-link")]);
    this.forks.replaceChildren("Forks: ", ...links, more ? " and more" : "");
    this.forks.hidden = ids.length === 0;
  }

  /** The tail replays every resume but may lag behind the view, or run ahead of it. */
  showResumes() {
    const count = Math.max(this.resumes.tail, this.resumes.view);
    this.resumed.textContent = `Resumed ${count === 1 ? "once" : `${count} times`}`;
    this.resumed.hidden = count === 0;
  }

  link(id, testid) {
    const link = el(
      "button",
      {
        type: "button",
        class: "link",
        title: id,
        "aria-label": `Show execution ${id}`,
        dataset: { testid, executionId: id },
      },
      shortId(id),
    );
    link.onclick = () => this.open(id);
    return link;
  }

  /** POST `body` to the execution's `action`; a 401 also ends the session. */
  async post(action, body) {
    try {
      return await this.api.post(`/v1/executions/${this.executionId}/${action}`, body);
    } catch (error) {
      if (error.status === 401) this.onError(error);
      throw error;
    }
  }
}

/** The parts every control form has: a fieldset, the server's refusal, a note. */
function controlForm(name, kind, legend, fields) {
  const problem = el("p", {
    class: "problem",
    role: "alert",
    dataset: { testid: `${kind}-problem` },
  });
  const note = el("p", { class: "note", role: "status", dataset: { testid: `${kind}-note` } });
  const fieldset = el("fieldset", {}, el("legend", {}, legend), ...fields);
  const node = el(
    "form",
    { class: `control ${kind}-form`, "aria-label": name, dataset: { testid: `${kind}-form` } },
    fieldset,
    problem,
    note,
  );
  problem.hidden = true;
  return { node, fieldset, problem, note };
}

class ResumeForm {
  constructor(lineage) {
    this.lineage = lineage;
    this.reason = el("input", {
      type: "text",
      maxlength: 1000,
      placeholder: "Reason (optional)",
      "aria-label": "Reason for resuming",
      dataset: { testid: "resume-reason" },
    });
    const go = el("button", { type: "submit", dataset: { testid: "resume" } }, "Resume");
    const parts = controlForm("Resume the execution", "resume", "Run it again", [
      el("div", { class: "actions" }, this.reason, go),
      el("p", { class: "hint" }, "Completed steps keep their outputs; the others run again."),
    ]);
    ({ node: this.node, fieldset: this.fieldset, problem: this.problem, note: this.note } = parts);
    this.node.hidden = true;
    this.node.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  show(resumable) {
    if (resumable && this.node.hidden) this.reset(); // failed (again): a fresh form
    this.node.hidden = !resumable;
  }

  reset() {
    this.fieldset.disabled = false;
    this.reason.value = "";
    this.note.textContent = "";
    refuse(this, null);
  }

  async submit() {
    const reason = this.reason.value.trim();
    refuse(this, null);
    this.fieldset.disabled = true;
    this.note.textContent = "Resuming…";
    try {
      await this.lineage.post("resume", reason ? { reason } : {});
    } catch (error) {
      this.fieldset.disabled = false;
      this.note.textContent = "";
      refuse(this, error);
      return;
    }
    // the form goes once the tail shows `execution_resumed`; the timeline follows the run
    this.note.textContent = "Resumed; its new attempts follow below.";
  }
}

class ForkForm {
  constructor(lineage) {
    this.lineage = lineage;
    this.edited = false;
    this.step = el("select", { dataset: { testid: "fork-step" } });
    this.box = el("textarea", {
      class: "json",
      rows: 5,
      spellcheck: "false",
      dataset: { testid: "fork-input" },
    });
    this.box.addEventListener("input", () => {
      this.edited = true;
    });
    const go = el("button", { type: "submit", dataset: { testid: "fork-submit" } }, "Fork");
    const hint = "The steps it does not wait for keep this execution's outputs; it and the " +
      "steps after it run.";
    const form = controlForm("Fork the execution", "fork", "A new execution from a step", [
      el("label", {}, "From step", this.step),
      el("label", {}, "Input (a JSON object)", this.box),
      el("p", { class: "hint" }, hint),
      el("div", { class: "actions" }, go),
    ]);
    ({ fieldset: this.fieldset, problem: this.problem, note: this.note } = form);
    form.node.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.node = el(
      "details",
      { class: "fork", dataset: { testid: "fork" } },
      el("summary", { dataset: { testid: "fork-open" } }, "Fork from a step…"),
      form.node,
    );
  }

  /** The execution's steps to choose from: the first that did not complete, by default. */
  offer(steps) {
    const chosen = this.step.value;
    this.step.replaceChildren(...steps.map((s) => el("option", { value: s.id }, s.id)));
    const first = steps.find((s) => s.status !== "completed") ?? steps[0];
    if (steps.some((s) => s.id === chosen)) this.step.value = chosen;
    else if (first) this.step.value = first.id;
  }

  prefill(input) {
    if (!this.edited) this.box.value = JSON.stringify(input ?? {}, null, 2);
  }

  /** `{input}` the user asked for, or `{problem}`: why it cannot be sent. */
  read() {
    let input;
    try {
      input = JSON.parse(this.box.value);
    } catch (error) {
      return { problem: `Not JSON: ${error.message}` };
    }
    if (input === null || typeof input !== "object" || Array.isArray(input)) {
      return { problem: 'The input must be a JSON object, e.g. {"q": "x"}' };
    }
    return { input };
  }

  async submit() {
    const { input, problem } = this.read();
    refuse(this, problem);
    if (problem) return;
    this.fieldset.disabled = true;
    this.note.textContent = "Forking…";
    let created;
    try {
      created = await this.lineage.post("fork", { from_step: this.step.value, input });
    } catch (error) {
      this.fieldset.disabled = false;
      this.note.textContent = "";
      refuse(this, error);
      return;
    }
    this.fieldset.disabled = false;
    this.note.textContent = `Forked: ${created.id}`;
    if (!this.lineage.closed) this.lineage.open(created.id);
  }
}

/** Show why a control's request was refused (or nothing). */
function refuse(form, problem) {
  form.problem.textContent = problem ? String(problem) : "";
  form.problem.hidden = !problem;
}
