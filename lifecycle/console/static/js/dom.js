// Building the page from data without ever parsing data as HTML: every text goes in through
// textContent (via h()), so a device name or value cannot inject markup or script.

// h("a", {href: "#/x", class: "link", onclick: fn}, "text", child, [more children])
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(key, "");
    } else {
      element.setAttribute(key, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

// A table: columns [{title, cell: row => node|text, class}], rows, an optional empty text.
export function table(columns, rows, empty = "nothing to show") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.title)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.class }, c.cell(row))))),
    ),
  );
}

export function card(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${String(kind).replace(/[^a-z0-9-]/gi, "-")}` }, text);
}

export function errorBox(err) {
  const status = err.httpStatus ? `${err.httpStatus} ${err.kind}` : err.kind || "error";
  return h("div", { class: "error", role: "alert" }, h("strong", {}, status), " ", err.message);
}

export function deviceLink(endpoint) {
  return h("a", { href: `#/devices/${encodeURIComponent(endpoint)}` }, endpoint);
}

// "3 min ago" for an ISO time; the exact time in the tooltip.
export function ago(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  let text;
  if (seconds < 60) text = `${Math.round(seconds)} s ago`;
  else if (seconds < 3600) text = `${Math.round(seconds / 60)} min ago`;
  else if (seconds < 86400) text = `${Math.round(seconds / 3600)} h ago`;
  else text = `${Math.round(seconds / 86400)} d ago`;
  return h("time", { datetime: iso, title: iso }, text);
}

export function shortTime(iso) {
  if (!iso) return "";
  return h("time", { datetime: iso, title: iso }, iso.replace("T", " ").replace(/\.\d+Z$|Z$/, ""));
}

// Compact JSON for small values (desired/reported state, audit details).
export function json(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  if (typeof value !== "object") return String(value);
  const text = JSON.stringify(value);
  const shown = text.length > 160 ? `${text.slice(0, 159)}…` : text;
  return h("code", { class: "json", title: text.length > 160 ? text : undefined }, shown);
}

// The header's live-stream indicator, driven by the current view's event stream.
export function liveState(state) {
  const live = document.getElementById("live");
  live.hidden = false;
  live.className = `live live-${state}`;
  live.textContent = state === "open" ? "live" : state;
  live.dataset.state = state;
}
