// The metrics per agent, tool or process as hand-drawn SVG bar charts, and as a table.

import { LatestRead } from "./api.js";
import { el, svg } from "./elements.js";

const COUNTS = [
  { key: "runs", label: "runs" },
  { key: "successes", label: "successes" },
  { key: "failures", label: "failures" },
];
const DURATIONS = [
  { key: "p50", label: "p50" },
  { key: "p95", label: "p95" },
  { key: "p99", label: "p99" },
];
// events after which the figures change
const MOVES_METRICS = new Set([
  "agent_completed",
  "agent_failed",
  "tool_completed",
  "tool_failed",
  "step_retrying",
  "step_timed_out",
  "execution_completed",
  "execution_failed",
  "execution_cancelled",
  "execution_timed_out",
]);
const WIDTH = 560;
const CHAR = 6.5; // width of one label character at the chart's font size
const MAX_LABEL = 32;
const VALUE = 70;
const BAR = 12;
const GROUP_GAP = 10;
const LEGEND = 26;

export class Metrics {
  constructor(api, { onError }) {
    this.api = api;
    this.onError = onError;
    this.kind = document.getElementById("metrics-kind");
    this.charts = document.getElementById("metrics-charts");
    this.table = document.getElementById("metrics-rows");
    this.kind.onchange = () => this.reader.request(0);
    this.reader = new LatestRead((after) => this.load(after), 500);
    this.closed = false;
    this.charts.replaceChildren();
    this.table.replaceChildren();
  }

  /** Stop drawing: answers still on their way belong to a session that has ended. */
  close() {
    this.closed = true;
  }

  /** An event of the tail: re-read the figures once they include it. */
  apply(event) {
    if (MOVES_METRICS.has(event.type)) this.reader.request(event.position);
  }

  async load(after = 0) {
    const kind = this.kind.value;
    const page = await this.api
      .get(`/v1/metrics/${kind}`, { series: false, after: after || null })
      .catch(this.onError);
    if (!page || this.closed || kind !== this.kind.value) return;
    const noun = this.kind.selectedOptions[0].textContent;
    const items = page.items;
    this.charts.replaceChildren(
      items.length
        ? chart(`Runs and outcomes per ${noun}`, "metrics-counts", items, COUNTS, (t, k) => t[k],
            String)
        : el("p", { class: "muted" }, "No runs yet."),
      items.length
        ? chart(`Duration percentiles per ${noun} (ms)`, "metrics-durations", items, DURATIONS,
            (t, k) => t.duration_ms[k], (v) => Number(v.toFixed(1)).toString())
        : "",
    );
    this.table.replaceChildren(...items.map(tableRow));
  }
}

/** A horizontal grouped bar chart: one group per name, one bar per series. */
function chart(title, testid, items, series, value, format) {
  const values = items.map((item) => series.map((s) => value(item.totals, s.key)));
  const max = Math.max(1e-9, ...values.flat().filter((v) => v !== null));
  const longest = Math.max(...items.map((item) => Math.min(item.name.length, MAX_LABEL)));
  const labelWidth = Math.round(12 + CHAR * longest);
  const plot = WIDTH - labelWidth - VALUE;
  const groupHeight = series.length * (BAR + 2) + GROUP_GAP;
  const height = LEGEND + items.length * groupHeight;
  const titleId = `${testid}-title`;
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    class: "chart",
    role: "img",
    "aria-labelledby": titleId,
    "data-testid": testid,
  }, svg("title", { id: titleId }, title));
  series.forEach((s, i) => {
    const x = labelWidth + i * 110;
    root.append(
      svg("rect", { x, y: 6, width: 12, height: 12, class: `bar s-${s.key}` }),
      svg("text", { x: x + 16, y: 16, class: "legend" }, s.label),
    );
  });
  items.forEach((item, row) => {
    const top = LEGEND + row * groupHeight;
    const label = item.name.length > MAX_LABEL ? `${item.name.slice(0, MAX_LABEL - 1)}…` : item.name;
    const group = svg("g", { "data-testid": "chart-group", "data-name": item.name },
      svg("text", { x: labelWidth - 8, y: top + groupHeight / 2, class: "label" }, label,
        svg("title", {}, item.name)));
    series.forEach((s, i) => {
      const v = values[row][i];
      const y = top + i * (BAR + 2);
      const width = v === null ? 0 : Math.max(v > 0 ? 1 : 0, (v / max) * plot);
      const shown = v === null ? "–" : format(v);
      group.append(
        svg("rect", { x: labelWidth, y, width, height: BAR, class: `bar s-${s.key}` },
          svg("title", {}, `${item.name} ${s.label}: ${shown}`)),
        svg("text", { x: labelWidth + width + 4, y: y + BAR - 2, class: "value" }, shown),
      );
    });
    root.append(group);
  });
  return el("figure", {}, el("figcaption", {}, title), root);
}

function tableRow({ name, totals }) {
  const ms = (v) => (v === null ? "–" : v.toFixed(1));
  return el(
    "tr",
    { dataset: { testid: "metrics-row", name } },
    el("th", { scope: "row" }, name),
    ...[totals.runs, totals.successes, totals.failures, totals.timeouts, totals.retries,
      totals.sla_breaches].map((v) => el("td", {}, String(v))),
    ...["p50", "p95", "p99"].map((k) => el("td", {}, ms(totals.duration_ms[k]))),
  );
}
