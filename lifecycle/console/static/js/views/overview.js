// Fleet overview: devices by stage, region, carrier, firmware and registration; devices out of
// line with their desired state (drift) and the config bundles; the device list by selector;
// registrations as they happen.
//
// Data: GET /inventory (counts per stage exactly, by selector; the other breakdowns from the
// first SAMPLE devices), GET /state/drift, GET /config-bundles, GET /events (registrations).

import { ApiError, allPages, get, itemsOf, streamEvents } from "../api.js";
import { ago, badge, card, clear, deviceLink, errorBox, h, liveState, table } from "../dom.js";

const STAGES = ["manufactured", "bootstrapped", "active", "suspended", "retired"];
const SAMPLE = 10000;
const PAGE = 50;
const REGISTRATION_EVENTS = ["registered", "updated", "deregistered", "expired", "registration_refused"];

function counts(items, key) {
  const out = new Map();
  for (const item of items) {
    const value = key(item) ?? "(none)";
    out.set(value, (out.get(value) || 0) + 1);
  }
  return [...out.entries()].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])));
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

async function stageCounts() {
  const answers = await Promise.all(STAGES.map((stage) => get("/inventory", { select: `stage=${stage}`, limit: 1 })));
  return STAGES.map((stage, n) => [stage, answers[n].count]).filter(([, n]) => n > 0);
}

function driftCard(drift) {
  const rows = itemsOf(drift);
  const byKey = counts(rows, (r) => `${r.dimension} ${r.status}`);
  const summary = byKey.map(([key, n]) => {
    const [dimension, status] = key.split(" ");
    return h("li", {}, badge(status), " ", h("strong", {}, dimension), ` ${n}`);
  });
  return card(
    "Drift",
    rows.length ? h("ul", { class: "inline-list" }, summary) : h("p", { class: "ok-text" }, "every device is in line with its desired state"),
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
  const [health, stages, sample, drift, bundles] = await Promise.all([
    fetch("/health").then((r) => r.json()),
    unless503(stageCounts(), noInventory),
    unless503(allPages("/inventory", {}, SAMPLE), noInventory),
    unless503(get("/state/drift", { limit: 1000 }), () => ({ items: [], truncated: false })),
    unless503(get("/config-bundles").then(itemsOf), () => []),
  ]);
  if (!view.current()) return;
  const devices = sample.items;
  const note = sample.complete ? null : h("p", { class: "muted small" }, `breakdowns from the first ${devices.length} of ${sample.total} devices`);

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
  const registered = devices.filter((d) => d.registered).length;
  clear(
    root,
    h("h1", {}, "Fleet overview"),
    h(
      "div",
      { class: "stats" },
      stat("devices in inventory", sample.total),
      stat("registered now", health.devices),
      stat("online in inventory", registered, sample.complete ? null : "of the sample"),
      stat("out of line", new Set(itemsOf(drift).map((r) => r.endpoint)).size, "devices with drift"),
    ),
    note,
    h(
      "div",
      { class: "grid" },
      bars("By stage", stages, keySelector("stage"), filter),
      bars("By region", counts(devices, (d) => d.region), keySelector("region"), filter),
      bars("By carrier", counts(devices, (d) => d.carrier), keySelector("carrier"), filter),
      bars("By firmware", counts(devices, (d) => d.firmware), keySelector("firmware"), filter),
    ),
    h("div", { class: "grid grid-2" }, driftCard(drift), bundlesCard(bundles)),
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
