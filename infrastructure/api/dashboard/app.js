// The dashboard's entry point: the token, the caller's live tail, and the three views.

import { Api } from "./api.js";
import { Metrics } from "./charts.js";
import { ExecutionList } from "./executions.js";
import { ScheduleList } from "./schedules.js";
import { Tail } from "./tail.js";
import { Timeline } from "./timeline.js";

const TOKEN_KEY = "agent-ledger.token";
const $ = (id) => document.getElementById(id);

let session = null;

/** Everything that lives while one token is in use. */
class Session {
  constructor(token) {
    this.api = new Api(token);
    const onError = (error) => this.fail(error);
    this.metrics = new Metrics(this.api, { onError });
    this.timeline = new Timeline(this.api, { onError });
    this.list = new ExecutionList(this.api, {
      onSelect: (id) => this.timeline.show(id),
      onError,
    });
    this.schedules = new ScheduleList(this.api, { onSelect: (id) => this.timeline.show(id), onError });
    // live only at first; `Tail` resumes from the last position it saw after a drop
    this.tail = new Tail(token, {}, {
      onOpen: (resumed) => this.opened(resumed),
      onEvent: (event) => {
        this.list.apply(event);
        this.metrics.apply(event);
        this.schedules.apply(event);
      },
      onState: (state) => {
        $("connection").textContent = state;
        $("connection").dataset.state = state;
      },
      onFatal: (text, code) => this.fail(text, code === 4401),
    });
  }

  start() {
    const claims = this.api.claims();
    $("who").textContent = claims.sub ? `${claims.sub} (${(claims.roles || []).join(", ")})` : "";
    this.tail.start();
  }

  // the list is read once the subscription is live, so no change falls between the two
  opened(resumed) {
    if (resumed) return;
    this.list.load(true);
    this.metrics.load();
    this.schedules.load();
  }

  /** Show what went wrong; a refused token signs out, so that another can be entered. */
  fail(error, unauthenticated = error.status === 401) {
    if (session !== this) return; // a late answer to a session already left
    showError(String(error));
    if (unauthenticated) signOut(false);
  }

  stop() {
    this.tail.stop();
    this.timeline.close();
    this.list.close();
    this.metrics.close();
    this.schedules.close();
  }
}

function signIn(token) {
  if (session) session.stop();
  showError("");
  localStorage.setItem(TOKEN_KEY, token);
  $("sign-in").hidden = true;
  $("session").hidden = false;
  $("dashboard").hidden = false;
  session = new Session(token);
  session.start();
}

function signOut(clearError = true) {
  if (session) session.stop();
  session = null;
  localStorage.removeItem(TOKEN_KEY);
  if (clearError) showError("");
  $("token").value = "";
  $("sign-in").hidden = false;
  $("session").hidden = true;
  $("dashboard").hidden = true;
  $("token").focus();
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

/** `#token=...` in the address signs in at once; the fragment never reaches the server. */
function tokenFromAddress() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) history.replaceState(null, "", location.pathname + location.search);
  return token;
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) signIn(token);
});
$("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => {
  const token = tokenFromAddress();
  if (token) signIn(token);
});

const token = tokenFromAddress() || localStorage.getItem(TOKEN_KEY);
if (token) signIn(token);
