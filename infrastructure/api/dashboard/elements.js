// Building DOM nodes (text only: nothing from the API is parsed as HTML) and formatting figures.

const SVG = "http://www.w3.org/2000/svg";

/** `el("td", {class: "x", dataset: {id: 1}}, "text", child)`. */
export function el(tag, attributes = {}, ...children) {
  return fill(document.createElement(tag), attributes, children);
}

/** The same for SVG elements. */
export function svg(tag, attributes = {}, ...children) {
  return fill(document.createElementNS(SVG, tag), attributes, children);
}

function fill(node, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

export function milliseconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1000) return `${Number(value.toFixed(1))} ms`;
  return `${Number((value / 1000).toFixed(2))} s`;
}

export function clock(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  const millis = String(at.getMilliseconds()).padStart(3, "0");
  return `${at.toLocaleTimeString([], { hour12: false })}.${millis}`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString([], { hour12: false }) : "–";
}

export function shortId(id) {
  return id.slice(0, 8);
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

export function shorten(text, most) {
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}
