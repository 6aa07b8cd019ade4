// The console's only way to the server: the public, versioned HTTP API with the operator's
// bearer token. Every call goes through API_BASE, so a new API version is one edit here.

export const API_BASE = "/v1";

const TOKEN_KEY = "fleetloop.console.token";

// The token lives in sessionStorage: it survives a reload of this tab, never reaches other
// tabs or disk-persistent storage, and is gone when the tab closes.
export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

// Called when the server answers 401: the app shows the login again.
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// An error answer of the API: its HTTP status and the error envelope
// {"status": kind, "message": "what failed and what to do", ...fields}.
export class ApiError extends Error {
  constructor(httpStatus, body) {
    super(body?.message || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.kind = body?.status || "http_error";
    this.body = body || {};
  }
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  if (session.token) out.Authorization = `Bearer ${session.token}`;
  return out;
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { status: "bad_response", message: text.slice(0, 300) };
  }
}

// One API call. `path` is relative to API_BASE ("/devices/dev-1"); `query` an object whose
// array values repeat the parameter; `body` is sent as JSON.
export async function api(method, path, { query, body, signal } = {}) {
  const url = new URL(API_BASE + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(key, item);
  }
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { status: "no_server", message: `the server did not answer (${err.message})` });
  }
  const data = await parse(response);
  if (response.status === 401) {
    onUnauthorized(new ApiError(401, data));
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, query, signal) => api("GET", path, { query, signal });

// A list answer, whatever its envelope: a bare array or {items: [...]}.
export function itemsOf(answer) {
  if (Array.isArray(answer)) return answer;
  return answer?.items || [];
}

// Every page of a cursor-paged list (inventory, group members), at most `max` items.
export async function allPages(path, query = {}, max = 10000) {
  const items = [];
  let cursor;
  let answer;
  do {
    answer = await get(path, { ...query, limit: 1000, cursor });
    items.push(...itemsOf(answer));
    cursor = answer.next_cursor;
  } while (cursor && items.length < max);
  return { items, total: answer?.count ?? items.length, complete: !cursor };
}

// The path of a device operation: /devices/{endpoint}/{kind}/{lwm2m path without its slash}.
export function devicePath(endpoint, kind, lwm2mPath) {
  const tail = lwm2mPath.replace(/^\/+/, "");
  return `/devices/${encodeURIComponent(endpoint)}/${kind}/${tail}`;
}

// The server-sent event stream (GET /events, or another stream's `path` such as a
// campaign's). EventSource cannot send an Authorization header, so this reads the stream
// with fetch() and parses the SSE framing itself.
// Calls onEvent(type, data) per message; returns a function that closes the stream.
// Reconnects after a dropped connection (not after 401, which means log in again).
export function streamEvents(query, onEvent, onState = () => {}, path = "/events") {
  const controller = new AbortController();
  let stopped = false;

  async function once() {
    const url = new URL(`${API_BASE}${path}`, location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(key, item);
    }
    const response = await fetch(url, {
      headers: headers({ Accept: "text/event-stream" }),
      signal: controller.signal,
    });
    if (response.status === 401) {
      stopped = true;
      onUnauthorized(new ApiError(401, await parse(response)));
      return;
    }
    if (!response.ok) throw new ApiError(response.status, await parse(response));
    onState("open");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function dispatch(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // keepalive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = text;
      else if (field === "data") data.push(text);
    }
    if (!data.length) return;
    try {
      onEvent(type, JSON.parse(data.join("\n")));
    } catch (err) {
      console.warn("unreadable event", err);
    }
  }

  (async () => {
    let delay = 1000;
    while (!stopped) {
      try {
        await once();
        delay = 1000;
      } catch (err) {
        if (stopped || err.name === "AbortError") return;
        onState("error", err);
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  })();

  return () => {
    stopped = true;
    controller.abort();
  };
}
