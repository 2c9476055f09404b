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
