// The parts of a timeline row every kind of event shares.

import { clock, el } from "./elements.js";

export function heading(event, label) {
  return [
    el("time", { datetime: event.timestamp }, clock(event.timestamp)),
    el("span", { class: "type" }, label),
    el("span", { class: "step" }, step(event.data)),
  ];
}

export function attempt(data) {
  return { step: data.step_id, attempt: data.attempt };
}

function step(data) {
  if (data.step_id === undefined) return "";
  return data.attempt > 1 ? `${data.step_id} #${data.attempt}` : data.step_id;
}

export function json(value) {
  return value === undefined ? "" : JSON.stringify(value) ?? String(value);
}

export function errorText(error) {
  if (typeof error === "string") return error;
  if (!error?.message) return JSON.stringify(error);
  return error.type ? `${error.type}: ${error.message}` : error.message;
}
