// Fleet overview: devices by stage, region, carrier, firmware and registration; devices out of
// line with their desired state (drift) and the config bundles; the device list by selector;
// registrations as they happen.
//
// Data: GET /fleet/summary (every breakdown and the drift counts, computed by the server over
// the whole fleet), GET /state/drift (the first rows out of line), GET /config-bundles,
// GET /inventory (the device list by selector), GET /events (registrations).

import { ApiError, get, itemsOf, streamEvents } from "../api.js";
import { ago, badge, card, clear, deviceLink, errorBox, h, liveState, table } from "../dom.js";

const PAGE = 50;
const REGISTRATION_EVENTS = ["registered", "updated", "deregistered", "expired", "registration_refused"];

// The server's [{value, count}] as [value, count] pairs (null: "(none)").
function entries(list) {
  return (list || []).map(({ value, count }) => [value ?? "(none)", count]);
}

// One breakdown as labelled bars; a click filters the device list by that value.
function bars(title, entries, selectorOf, filter) {
  const total = entries.reduce((sum, [, n]) => sum + n, 0) || 1;
  const rows = entries.slice(0, 8).map(([value, n]) =>
    h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "bar",
          title: selectorOf(value) ? `show devices with ${selectorOf(value)}` : undefined,
          disabled: !selectorOf(value),
          onclick: () => filter(selectorOf(value)),
        },
        h("span", { class: "bar-label" }, String(value)),
        h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${(100 * n) / total}%` })),
        h("span", { class: "bar-count" }, String(n)),
      ),
    ),
  );
  const more = entries.length > 8 ? h("p", { class: "muted small" }, `and ${entries.length - 8} more`) : null;
  return card(title, entries.length ? h("ul", { class: "bars", dataset: { breakdown: title.toLowerCase() } }, rows) : h("p", { class: "empty" }, "no devices"), more);
}

function quoted(value) {
  return /^[^\s,()"]+$/.test(value) ? value : `"${value.replace(/"/g, "")}"`;
}

function keySelector(key) {
  return (value) => (value === "(none)" ? null : `${key}=${quoted(String(value))}`);
}

function stat(label, value, hint) {
  return h("div", { class: "stat" }, h("div", { class: "stat-value" }, String(value)), h("div", { class: "stat-label" }, label), hint ? h("div", { class: "muted small" }, hint) : null);
}

function driftCard(drift, fleet) {
  const rows = itemsOf(drift);
  const behind = (fleet.drift || []).filter((d) => d.status !== "applied");
  const summary = behind.map((d) => h("li", {}, badge(d.status), " ", h("strong", {}, d.dimension), ` ${d.count}`));
  return card(
    "Drift",
    behind.length
      ? h("ul", { class: "inline-list", id: "drift-summary" }, summary)
      : h("p", { class: "ok-text" }, "every device is in line with its desired state"),
    table(
      [
        { title: "Device", cell: (r) => deviceLink(r.endpoint) },
        { title: "Dimension", cell: (r) => r.dimension },
        { title: "Status", cell: (r) => badge(r.status) },
        { title: "Desired", cell: (r) => summaryOf(r.desired) },
        { title: "Reported", cell: (r) => summaryOf(r.reported) },
      ],
      rows.slice(0, 10),
      "",
    ),
    rows.length > 10 || drift.truncated ? h("p", { class: "muted small" }, `${rows.length}${drift.truncated ? "+" : ""} rows; the first 10 shown`) : null,
  );
}

// A one-line summary of a desired/reported state value ({version: "1.2"} -> "1.2").
export function summaryOf(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  if (typeof value !== "object") return String(value);
  if ("version" in value) return String(value.version);
  return h("code", { class: "json" }, JSON.stringify(value));
}

function bundlesCard(bundles) {
  return card(
    "Config bundles",
    table(
      [
        { title: "Bundle", cell: (b) => b.name },
        { title: "Digest", cell: (b) => h("code", { title: b.digest }, b.digest.slice(0, 12)) },
        { title: "Size", cell: (b) => `${b.size} B`, class: "num" },
        { title: "Registered", cell: (b) => ago(b.created_at) },
      ],
      bundles,
      "no config bundles registered",
    ),
  );
}

// A part of the page whose component the server may not run (503): shown as missing.
async function unless503(promise, fallback) {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof ApiError && err.httpStatus === 503) return fallback(err);
    throw err;
  }
}

export async function render(root, view) {
  const noInventory = (err) => {
    throw new ApiError(503, { status: err.kind, message: `${err.message}; the overview needs the inventory` });
  };
  const [health, fleet, drift, bundles] = await Promise.all([
    fetch("/health").then((r) => r.json()),
    unless503(get("/fleet/summary"), noInventory),
    unless503(get("/state/drift", { limit: 1000 }), () => ({ items: [], truncated: false })),
    unless503(get("/config-bundles").then(itemsOf), () => []),
  ]);
  if (!view.current()) return;

  const list = h("div", { id: "device-list" });
  const selectInput = h("input", { id: "select", type: "search", placeholder: "selector, e.g. region=eu-west,stage=active", spellcheck: "false", "aria-label": "selector" });
  const filter = (selector) => {
    selectInput.value = selector || "";
    loadList(selector || "");
    list.scrollIntoView({ behavior: "smooth", block: "start" });
  };

  async function loadList(selector, cursor) {
    try {
      const page = await get("/inventory", { select: selector, limit: PAGE, cursor });
      if (!view.current()) return;
      clear(
        list,
        h("p", { class: "muted small" }, `${page.count} device${page.count === 1 ? "" : "s"} match ${page.select ? `“${page.select}”` : "(all)"}`),
        table(
          [
            { title: "Device", cell: (d) => deviceLink(d.endpoint) },
            { title: "Stage", cell: (d) => badge(d.stage) },
            { title: "Registered", cell: (d) => (d.registered ? badge("online", "ok") : badge("offline", "off")) },
            { title: "Region", cell: (d) => d.region ?? "" },
            { title: "Carrier", cell: (d) => d.carrier ?? "" },
            { title: "Firmware", cell: (d) => d.firmware ?? "" },
            { title: "Tenant", cell: (d) => d.tenant ?? "" },
            { title: "Last seen", cell: (d) => ago(d.last_seen) },
          ],
          page.items,
          "no device matches",
        ),
        page.next_cursor ? h("button", { type: "button", onclick: () => loadList(selector, page.next_cursor) }, "Next page") : null,
      );
    } catch (err) {
      if (err instanceof ApiError && err.httpStatus === 401) return;
      clear(list, errorBox(err));
    }
  }

  const events = h("ol", { class: "events", id: "overview-events" });
  clear(
    root,
    h("h1", {}, "Fleet overview"),
    h(
      "div",
      { class: "stats" },
      stat("devices in inventory", fleet.devices),
      stat("registered now", health.devices),
      stat("online in inventory", fleet.registered),
      stat("out of line", fleet.out_of_line, "devices with drift"),
    ),
    h(
      "div",
      { class: "grid" },
      bars("By stage", entries(fleet.stage), keySelector("stage"), filter),
      bars("By region", entries(fleet.region), keySelector("region"), filter),
      bars("By carrier", entries(fleet.carrier), keySelector("carrier"), filter),
      bars("By firmware", entries(fleet.firmware), keySelector("firmware"), filter),
      bars("By config bundle", entries(fleet.config), () => null, filter),
      bars("By SKU", entries(fleet.sku), keySelector("sku"), filter),
    ),
    h("p", { class: "muted small", id: "fleet-summary-note" }, `counted by the server over all ${fleet.devices} devices${fleet.select ? ` matching ${fleet.select}` : ""}`),
    h("div", { class: "grid grid-2" }, driftCard(drift, fleet), bundlesCard(bundles)),
    card(
      "Devices",
      h(
        "form",
        {
          class: "toolbar",
          onsubmit: (event) => {
            event.preventDefault();
            loadList(selectInput.value.trim());
          },
        },
        selectInput,
        h("button", { type: "submit" }, "Filter"),
      ),
      list,
    ),
    card("Registrations (live)", events),
  );
  await loadList("");

  const stop = streamEvents({ type: REGISTRATION_EVENTS }, (type, data) => {
    if (type === "ready" || type === "dropped") return;
    events.prepend(
      h("li", {}, h("span", { class: "muted" }, new Date().toLocaleTimeString()), " ", badge(type), " ", data.endpoint ? deviceLink(data.endpoint) : data.identity || ""),
    );
    while (events.children.length > 20) events.lastChild.remove();
  }, liveState);
  view.onLeave(stop);
}
