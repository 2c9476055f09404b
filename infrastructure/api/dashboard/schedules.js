// The caller's schedules with their next fire times; re-read when one of them starts an
// execution (its `execution_started` on the tail), and every 15 s as the times move on.

import { LatestRead } from "./api.js";
import { el, shortId, when } from "./elements.js";

const REFRESH_MS = 15_000;
const SHOWN = 3; // next fire times per schedule

export class ScheduleList {
  constructor(api, { onSelect, onError }) {
    this.api = api;
    this.onSelect = onSelect;
    this.onError = onError;
    this.rows = document.getElementById("schedule-rows");
    this.empty = document.getElementById("schedules-empty");
    this.closed = false;
    this.rows.replaceChildren();
    this.reads = new LatestRead(() => this.load(), 250);
    this.timer = setInterval(() => this.reads.request(0), REFRESH_MS);
  }

  async load() {
    const schedules = await this.api.get("/v1/schedules").catch(this.onError);
    if (schedules && !this.closed) this.render(schedules);
  }

  /** A tail event: an execution a schedule started moves its last tick on. */
  apply(event) {
    const cause = event.data?.caused_by;
    if (event.type === "execution_started" && String(cause).startsWith("schedule:")) {
      this.reads.request(event.position);
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
  }

  render(schedules) {
    this.rows.replaceChildren(...schedules.map((schedule) => this.row(schedule)));
    this.empty.hidden = schedules.length > 0;
  }

  row(schedule) {
    const state = schedule.paused ? "paused" : "active";
    const process = schedule.version ? `${schedule.process} v${schedule.version}` : schedule.process;
    return el(
      "tr",
      { dataset: { testid: "schedule-row", schedule: schedule.name } },
      el("td", { dataset: { testid: "schedule-name" } }, schedule.name),
      el("td", {}, process),
      el(
        "td",
        { dataset: { testid: "schedule-cron" } },
        el("code", {}, schedule.cron),
        el("span", { class: "muted" }, ` ${schedule.timezone}`),
      ),
      el("td", { dataset: { testid: "schedule-overlap" } }, schedule.overlap.replace("_", " ")),
      el(
        "td",
        {},
        el("span", { class: "status", dataset: { status: state, testid: "schedule-state" } }, state),
      ),
      el("td", {}, this.upcoming(schedule)),
      el("td", { dataset: { testid: "schedule-last" } }, ...this.last(schedule)),
    );
  }

  /** The next fire times as wall-clock times of the schedule's zone (the browser's on hover). */
  upcoming(schedule) {
    if (!schedule.next_fire_times.length) return el("span", { class: "muted" }, "–");
    const times = schedule.next_fire_times.slice(0, SHOWN).map((at) => {
      const wall = at.slice(0, 19).replace("T", " ");
      return el("div", {}, el("time", { datetime: at, title: when(at), dataset: { at } }, wall));
    });
    return el("div", { dataset: { testid: "schedule-next" } }, ...times);
  }

  last(schedule) {
    if (!schedule.last_tick) return ["–"];
    const shown = [el("time", { datetime: schedule.last_tick }, when(schedule.last_tick))];
    const id = schedule.last_execution_id;
    if (id) {
      const open = el(
        "button",
        { type: "button", class: "link", title: id, "aria-label": `Show execution ${id}` },
        shortId(id),
      );
      open.onclick = () => this.onSelect(id);
      shown.push(" ", open);
    }
    return shown;
  }
}
