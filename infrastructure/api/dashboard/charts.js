// The metrics per agent, tool, process or user as hand-drawn SVG bar charts (their model
// calls' tokens and cost too, in totals and per minute), and as a table.

import { LatestRead } from "./api.js";
import { el, svg, usd } from "./elements.js";

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
// the usage charts' colours are attributes: a stylesheet rule for their class would win
const TOKENS = [
  { key: "prompt_tokens", label: "prompt", color: "#8e6cc8" },
  { key: "completion_tokens", label: "completion", color: "#d08a2e" },
];
const COST = [{ key: "cost_usd", label: "known cost", color: "#2e9e6b" }];
const MINUTES = 30; // the per-minute charts show the last half hour
// events after which the figures change
const MOVES_METRICS = new Set([
  "agent_completed",
  "agent_failed",
  "tool_completed",
  "tool_failed",
  "llm_call_completed",
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
    const now = Date.now();
    const since = new Date(now - MINUTES * 60_000).toISOString();
    const [page, recent] = await Promise.all([
      this.api.get(`/v1/metrics/${kind}`, { series: false, after: after || null }),
      this.api.get(`/v1/metrics/${kind}`, { series: true, from: since, after: after || null }),
    ]).catch((error) => {
      this.onError(error);
      return [];
    });
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
      ...usageCharts(noun, items, recent.items, now),
    );
    this.table.replaceChildren(...items.map(tableRow));
  }
}

/** Tokens and cost per name (those whose runs called a model), then per minute. */
function usageCharts(noun, items, recent, now) {
  const calling = items.filter((item) => item.totals.usage.model_calls > 0);
  if (!calling.length) return [el("p", { class: "muted" }, "No model calls yet.")];
  const usage = (t, k) => t.usage[k];
  const unpriced = calling.reduce((sum, item) => sum + item.totals.usage.unpriced_calls, 0);
  return [
    chart(`Model tokens per ${noun}`, "metrics-tokens", calling, TOKENS, usage, String),
    chart(`Model cost per ${noun} (USD)`, "metrics-cost", calling, COST, usage, usd),
    unpriced
      ? el("p", { class: "muted", "data-testid": "metrics-unpriced" },
          `${unpriced} model call${unpriced === 1 ? "" : "s"} had no price: ` +
            "the costs above leave them out (unknown, not 0).")
      : "",
    minuteChart(`Model tokens per minute, last ${MINUTES} minutes`, "metrics-tokens-minutes",
      recent, TOKENS, (m, k) => m.usage[k], String, now),
    minuteChart(`Model cost per minute (USD), last ${MINUTES} minutes`, "metrics-cost-minutes",
      recent, COST, (m, k) => m.usage[k], usd, now),
  ];
}

/** Columns of the last `MINUTES` minutes (by the minute the runs started), one stacked part
 * per series, summed over every name. */
function minuteChart(title, testid, items, series, value, format, now) {
  const last = Math.floor(now / 60_000) * 60_000;
  const slots = Array.from({ length: MINUTES }, (_, i) => last - (MINUTES - 1 - i) * 60_000);
  const at = new Map(slots.map((minute, i) => [minute, i]));
  const sums = slots.map(() => series.map(() => 0));
  for (const item of items) {
    for (const minute of item.series) {
      const slot = at.get(Date.parse(minute.minute));
      if (slot === undefined) continue;
      series.forEach((s, i) => {
        sums[slot][i] += value(minute, s.key) ?? 0;
      });
    }
  }
  const highest = Math.max(0, ...sums.map((parts) => parts.reduce((a, b) => a + b, 0)));
  const max = Math.max(1e-9, highest);
  const left = 8;
  const plotHeight = 90;
  const step = (WIDTH - left - 8) / MINUTES;
  const height = LEGEND + plotHeight + 18;
  const titleId = `${testid}-title`;
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    class: "chart",
    role: "img",
    "aria-labelledby": titleId,
    "data-testid": testid,
  }, svg("title", { id: titleId }, title));
  legend(root, series, left);
  slots.forEach((minute, slot) => {
    let top = LEGEND + plotHeight;
    const parts = sums[slot];
    const iso = new Date(minute).toISOString();
    const column = svg("g", { "data-testid": "chart-minute", "data-minute": iso });
    series.forEach((s, i) => {
      const size = (parts[i] / max) * plotHeight;
      top -= size;
      const shown = `${minuteLabel(minute)} ${s.label}: ${format(parts[i])}`;
      const attributes = { x: left + slot * step, y: top, width: Math.max(step - 2, 1) };
      column.append(
        svg("rect", { ...attributes, height: size, class: `bar s-${s.key}`, fill: s.color },
          svg("title", {}, shown)),
      );
    });
    root.append(column);
  });
  const total = sums.map((parts) => parts.reduce((a, b) => a + b, 0)).reduce((a, b) => a + b, 0);
  root.append(
    svg("text", { x: left, y: height - 4, class: "value" }, minuteLabel(slots[0])),
    svg("text", { x: WIDTH - 8, y: height - 4, class: "value", "text-anchor": "end" },
      minuteLabel(last)),
    svg("text", { x: WIDTH - 4, y: 16, class: "value", "text-anchor": "end" },
      `highest ${format(highest)} · in all ${format(total)}`),
  );
  return el("figure", {}, el("figcaption", {}, title), root);
}

function minuteLabel(minute) {
  const options = { hour: "2-digit", minute: "2-digit", hour12: false };
  return new Date(minute).toLocaleTimeString([], options);
}

function legend(root, series, x0) {
  series.forEach((s, i) => {
    const x = x0 + i * 110;
    root.append(
      svg("rect", { x, y: 6, width: 12, height: 12, class: `bar s-${s.key}`, fill: s.color }),
      svg("text", { x: x + 16, y: 16, class: "legend" }, s.label),
    );
  });
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
  legend(root, series, labelWidth);
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
      const bar = { x: labelWidth, y, width, height: BAR, class: `bar s-${s.key}`, fill: s.color };
      group.append(
        svg("rect", bar, svg("title", {}, `${item.name} ${s.label}: ${shown}`)),
        svg("text", { x: labelWidth + width + 4, y: y + BAR - 2, class: "value" }, shown),
      );
    });
    root.append(group);
  });
  return el("figure", {}, el("figcaption", {}, title), root);
}

function tableRow({ name, totals }) {
  const ms = (v) => (v === null ? "–" : v.toFixed(1));
  const { usage } = totals;
  const unpriced = usage.unpriced_calls ? ` (+${usage.unpriced_calls} unpriced)` : "";
  return el(
    "tr",
    { dataset: { testid: "metrics-row", name } },
    el("th", { scope: "row" }, name),
    ...[totals.runs, totals.successes, totals.failures, totals.timeouts, totals.retries,
      totals.sla_breaches].map((v) => el("td", {}, String(v))),
    ...["p50", "p95", "p99"].map((k) => el("td", {}, ms(totals.duration_ms[k]))),
    ...[usage.model_calls, usage.prompt_tokens, usage.completion_tokens].map((v) =>
      el("td", {}, String(v))),
    el("td", { dataset: { testid: "metrics-cost" } }, usd(usage.cost_usd) + unpriced),
  );
}
