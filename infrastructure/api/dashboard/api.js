// Calls to the Agent Ledger API with the caller's bearer token; errors are RFC 9457 problems.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
  }

  toString() {
    return `${this.title} (${this.status}): ${this.message}`;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  /** GET a JSON document; `params` with empty values are left out. */
  async get(path, params = {}) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") query.set(name, value);
    }
    return this.send(query.toString() ? `${path}?${query}` : path, {});
  }

  /** POST `body` as JSON; the answer's JSON document. */
  async post(path, body) {
    return this.send(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  async send(url, { headers = {}, ...init }) {
    let response;
    try {
      response = await fetch(url, {
        ...init,
        headers: { ...headers, Authorization: `Bearer ${this.token}`, Accept: "application/json" },
      });
    } catch (error) {
      throw new ApiError(0, { title: "Server unreachable", detail: String(error) });
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  /** The subject and roles the token claims (shown only; the server verifies it). */
  claims() {
    try {
      const payload = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload));
    } catch {
      return {};
    }
  }
}

/**
 * Runs `read(position)` one at a time, at most once per `pauseMs`; requests made meanwhile
 * fold into one more run, for the highest position asked.
 */
export class LatestRead {
  constructor(read, pauseMs = 0) {
    this.read = read;
    this.pauseMs = pauseMs;
    this.due = null;
    this.running = false;
  }

  request(position) {
    this.due = Math.max(this.due ?? 0, position);
    if (!this.running) this.run();
  }

  async run() {
    this.running = true;
    try {
      while (this.due !== null) {
        const position = this.due;
        this.due = null;
        await this.read(position);
        if (this.pauseMs) await new Promise((done) => setTimeout(done, this.pauseMs));
      }
    } finally {
      this.running = false;
    }
  }
}
