// The caller's executions, newest first, kept current from the live tail.

import { LatestRead } from "./api.js";
import { clock, el, milliseconds, shortId, spending, usd, when } from "./elements.js";
import { QUIET } from "./tail.js";

const PAGE_SIZE = 25;

export class ExecutionList {
  constructor(api, { onSelect, onError }) {
    this.api = api;
    this.onSelect = onSelect;
    this.onError = onError;
    this.rows = document.getElementById("execution-rows");
    this.empty = document.getElementById("executions-empty");
    this.more = document.getElementById("more");
    this.filter = document.getElementById("status-filter");
    this.views = new Map(); // id → the execution's latest status view
    this.readers = new Map(); // id → its status reads, one at a time
    this.trs = new Map(); // id → its table row, updated in place so focus stays put
    this.cursor = null;
    this.selected = null;
    this.closed = false;
    this.rows.replaceChildren();
    this.more.onclick = () => this.load(false);
    this.filter.onchange = () => this.load(true);
  }

  /** Load the first page (`reset`) or the next one. */
  async load(reset = true) {
    const page = await this.api
      .get("/v1/executions", {
        limit: PAGE_SIZE,
        status: this.filter.value,
        cursor: reset ? null : this.cursor,
      })
      .catch(this.onError);
    if (!page) return;
    if (reset) this.views.clear();
    for (const view of page.items) this.views.set(view.id, view);
    this.cursor = page.next_cursor;
    this.render();
  }

  /** A tail event of one of the caller's executions: re-read its status once caught up. */
  apply(event) {
    if (QUIET.has(event.type)) return; // an agent at work: its row says the same
    const id = event.execution_id;
    if (!this.readers.has(id)) {
      this.readers.set(id, new LatestRead(async (after) => {
        const view = await this.api.get(`/v1/executions/${id}`, { after }).catch(this.onError);
        if (view) this.upsert(view);
        if (view?.finished_at) this.readers.delete(id);
      }, 250));
    }
    this.readers.get(id).request(event.position);
  }

  upsert(view) {
    const wanted = !this.filter.value || view.status === this.filter.value;
    if (wanted) this.views.set(view.id, view);
    else this.views.delete(view.id);
    this.render();
  }

  select(id) {
    this.selected = id;
    for (const [rowId, row] of this.trs) {
      if (rowId === id) row.setAttribute("aria-current", "true");
      else row.removeAttribute("aria-current");
    }
    this.onSelect(id);
  }

  /** Stop drawing: answers still on their way belong to a session that has ended. */
  close() {
    this.closed = true;
  }

  render() {
    if (this.closed) return;
    const views = [...this.views.values()].sort((a, b) =>
      a.started_at === b.started_at ? 0 : a.started_at < b.started_at ? 1 : -1,
    );
    for (const [id, row] of this.trs) {
      if (!this.views.has(id)) {
        row.remove();
        this.trs.delete(id);
      }
    }
    let next = this.rows.firstElementChild;
    for (const view of views) {
      const row = this.row(view);
      if (row === next) next = next.nextElementSibling;
      else this.rows.insertBefore(row, next);
    }
    this.empty.hidden = views.length > 0;
    this.more.hidden = !this.cursor;
  }

  row(view) {
    let row = this.trs.get(view.id);
    if (!row) {
      const open = el(
        "button",
        { type: "button", class: "link", title: view.id, "aria-label": `Show execution ${view.id}` },
        shortId(view.id),
      );
      open.onclick = () => this.select(view.id);
      row = el("tr", { dataset: { testid: "execution-row", executionId: view.id } }, el("td", {}, open));
      if (view.id === this.selected) row.setAttribute("aria-current", "true");
      this.trs.set(view.id, row);
    }
    while (row.children.length > 1) row.lastElementChild.remove();
    row.append(
      el("td", {}, ...breakable(view.process), ` v${view.process_version}`),
      el(
        "td",
        {},
        el("span", { class: "status", dataset: { status: view.status, testid: "execution-status" } },
          view.status.replace("_", " ")),
      ),
      el("td", {}, view.current_steps.join(", ") || "–"),
      el("td", { title: when(view.started_at) }, clock(view.started_at)),
      el("td", {}, milliseconds(view.duration_ms)),
      el("td", { dataset: { testid: "execution-cost" }, title: spent(view) }, cost(view)),
    );
    return row;
  }
}

/** What the execution's model calls cost; "–" when it made none (or the view does not say). */
function cost(view) {
  return view.model_calls ? usd(view.cost_usd) : "–";
}

function spent(view) {
  return view.model_calls ? spending(view) : null;
}

/** A snake_case name that may wrap after its underscores. */
function breakable(name) {
  return name.split(/(?<=_)/).flatMap((part, i) => (i ? [el("wbr"), part] : [part]));
}
