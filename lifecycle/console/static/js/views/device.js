// One device: registration and inventory record, the object tree with Read / Write / Execute /
// Observe per resource (like Leshan's demo), desired vs reported state, its live events and its
// audit records.
//
// Names of objects and resources come from the API's answers (GET /devices/{ep} lists the
// objects with names; Read and Discover name every resource), never from a table here.

import { ApiError, api, devicePath, get, itemsOf, streamEvents } from "../api.js";
import { ago, badge, card, clear, errorBox, h, json, liveState, shortTime, table } from "../dom.js";
import { enumeration, formatInstances, formatValue, parseInput } from "../values.js";
import { summaryOf } from "./overview.js";

const AUDIT_SHOWN = 20;

// -- small helpers -------------------------------------------------------------------------

function field(label, value) {
  return [h("dt", {}, label), h("dd", {}, value === null || value === undefined || value === "" ? h("span", { class: "muted" }, "—") : value)];
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([label, value]) => field(label, value)));
}

async function optional(promise) {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof ApiError && (err.httpStatus === 404 || err.httpStatus === 503)) return { missing: err };
    throw err;
  }
}

// Every leaf (single resource or resource instance) of a rendered node, with its path.
function* leaves(node) {
  if (!node) return;
  if (node.kind === "object") for (const i of node.instances || []) yield* leaves(i);
  else if (node.kind === "instance") for (const r of node.resources || []) yield* leaves(r);
  else yield node;
}

// -- the object tree -----------------------------------------------------------------------

class ObjectTree {
  constructor(endpoint, objects, observations, log) {
    this.endpoint = endpoint;
    this.objects = objects;
    this.log = log; // (text, kind) -> shows the operation's outcome
    this.rows = new Map(); // resource path -> {valueCell, resource}
    // Observations this page started (path -> id): only these can be stopped here, and they
    // are cancelled when the operator leaves the page, so a closed view leaves no device
    // reporting to nobody. Observations made by others (the state observer, the CLI) show
    // as "observed" and are left alone.
    this.observed = new Map();
    this.others = new Set();
    for (const o of observations) for (const p of o.paths) this.others.add(p);
    this.detail = h("div", { class: "tree-detail", id: "instance-detail" }, h("p", { class: "muted" }, "choose an object instance"));
    this.element = h("div", { class: "tree" }, this.list(), this.detail);
  }

  list() {
    return h(
      "ul",
      { class: "tree-objects" },
      this.objects.map((o) =>
        h(
          "li",
          {},
          h("div", { class: "tree-object" }, h("strong", {}, o.name || "(unknown object)"), " ", h("span", { class: "muted" }, `/${o.id}${o.version ? ` v${o.version}` : ""}`)),
          h(
            "ul",
            {},
            (o.instances.length ? o.instances : [null]).map((i) =>
              i === null
                ? h("li", { class: "muted small" }, "no instances")
                : h("li", {}, h("button", { type: "button", class: "link", dataset: { instance: `/${o.id}/${i}` }, onclick: (e) => this.open(o, i, e.target) }, `/${o.id}/${i}`)),
            ),
          ),
        ),
      ),
    );
  }

  async open(object, instance, button) {
    for (const b of this.element.querySelectorAll("button.link.selected")) b.classList.remove("selected");
    button?.classList.add("selected");
    const path = `/${object.id}/${instance}`;
    clear(this.detail, h("p", { class: "muted" }, `reading ${path}…`));
    this.rows.clear();
    const [read, discover] = await Promise.allSettled([
      get(devicePath(this.endpoint, "data", path)),
      get(devicePath(this.endpoint, "discover", path)),
    ]);
    if (read.status === "rejected" && discover.status === "rejected") {
      clear(this.detail, errorBox(read.reason));
      return;
    }
    const resources = new Map();
    if (discover.status === "fulfilled") {
      for (const link of discover.value.links || []) {
        const parts = String(link.path).split("/").filter(Boolean);
        if (parts.length === 3) resources.set(link.path, { path: link.path, id: Number(parts[2]), name: link.name, attributes: link.attributes, readable: false });
      }
    }
    if (read.status === "fulfilled") {
      for (const r of read.value.content?.resources || []) resources.set(r.path, { ...resources.get(r.path), ...r, readable: true });
    }
    const sorted = [...resources.values()].sort((a, b) => a.id - b.id);
    clear(
      this.detail,
      h("div", { class: "detail-head" }, h("h3", {}, `${object.name || "Object"} ${path}`), h("button", { type: "button", onclick: () => this.open(object, instance, button) }, "Read instance")),
      read.status === "rejected" ? errorBox(read.reason) : null,
      h(
        "table",
        { class: "resources" },
        h("thead", {}, h("tr", {}, ["ID", "Resource", "Value", "Type", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, sorted.map((r) => this.row(r))),
      ),
    );
  }

  row(resource) {
    const valueCell = h("td", { class: "value" });
    const row = h("tr", { dataset: { path: resource.path } });
    this.rows.set(resource.path, { valueCell, resource });
    this.show(resource);
    const actions = h("td", { class: "actions" });
    if (resource.readable) {
      actions.append(h("button", { type: "button", onclick: () => this.read(resource.path) }, "Read"));
      if (!resource.multiple) actions.append(h("button", { type: "button", onclick: () => this.editor(resource, valueCell) }, "Write"));
      actions.append(this.observeButton(resource.path));
    } else {
      actions.append(this.executeButton(resource.path));
    }
    row.append(h("td", { class: "num" }, String(resource.id)), h("td", {}, resource.name || h("span", { class: "muted" }, "(unknown)")), valueCell, h("td", { class: "muted small" }, resource.type || (resource.readable ? "" : "executable")), actions);
    return row;
  }

  show(resource) {
    const entry = this.rows.get(resource.path);
    if (!entry) return;
    entry.resource = { ...entry.resource, ...resource };
    const r = entry.resource;
    let text = "";
    if (r.multiple) text = formatInstances(r);
    else if (r.readable || "value" in r) text = formatValue(r);
    clear(entry.valueCell, text);
    entry.valueCell.classList.remove("flash");
    void entry.valueCell.offsetWidth; // restart the highlight animation
    entry.valueCell.classList.add("flash");
  }

  // A notification or a read: update every resource row the content covers.
  update(nodes) {
    for (const node of nodes) {
      if (node.kind === "resource" && this.rows.has(node.path)) this.show(node);
      else if (node.kind === "resource_instance") {
        const parent = node.path.split("/").slice(0, 4).join("/");
        const entry = this.rows.get(parent);
        if (entry?.resource.multiple) {
          const instances = (entry.resource.instances || []).filter((i) => i.id !== node.id);
          this.show({ path: parent, instances: [...instances, { id: node.id, value: node.value, iso: node.iso, encoding: node.encoding }].sort((a, b) => a.id - b.id) });
        }
      } else for (const leaf of leaves(node)) if (this.rows.has(leaf.path)) this.show(leaf);
    }
  }

  // Read a path and show its values; `quiet` keeps the outcome line of the operation that
  // asked for the read-back (a Write).
  async read(path, quiet = false) {
    try {
      const answer = await get(devicePath(this.endpoint, "data", path));
      if (answer.content) this.update([answer.content]);
      if (!quiet) this.log(`Read ${path}: ${answer.coap_code}`, "ok");
    } catch (err) {
      this.log(`Read ${path} failed: ${err.message}`, "error");
    }
  }

  editor(resource, valueCell) {
    const current = this.rows.get(resource.path)?.resource;
    const known = enumeration(resource.path);
    const input = h("input", { type: "text", class: "inline", value: current && current.value !== undefined ? String(current.value) : "", "aria-label": `new value of ${resource.path}`, title: known ? `a number or one of: ${Object.values(known.values).join(", ")}` : resource.type });
    const form = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (event) => {
          event.preventDefault();
          let value;
          try {
            value = parseInput(input.value, resource.type, resource.path);
          } catch (err) {
            this.log(err.message, "error");
            return;
          }
          try {
            const answer = await api("PUT", devicePath(this.endpoint, "data", resource.path), { body: { value } });
            this.log(`Write ${resource.path} = ${JSON.stringify(value)}: ${answer.coap_code}`, "ok");
            await this.read(resource.path, true);
          } catch (err) {
            this.log(`Write ${resource.path} failed: ${err.message}`, "error");
            this.show({ path: resource.path });
          }
        },
      },
      input,
      h("button", { type: "submit" }, "Send"),
      h("button", { type: "button", onclick: () => this.show({ path: resource.path }) }, "Cancel"),
    );
    clear(valueCell, form);
    input.focus();
    input.select();
  }

  // Cancel the observations this page started (on leaving the page).
  async stopAll() {
    const ids = [...this.observed.values()];
    this.observed.clear();
    await Promise.allSettled(ids.map((id) => api("DELETE", `/observations/${encodeURIComponent(id)}`)));
  }

  observedByOthers(path) {
    // An observation of the instance or object covers the resource too.
    for (const other of this.others) if (path === other || path.startsWith(`${other}/`)) return true;
    return false;
  }

  observeButton(path) {
    const button = h("button", { type: "button", class: "observe" });
    const label = () => {
      const on = this.observed.has(path);
      button.textContent = on ? "Stop observing" : "Observe";
      button.classList.toggle("on", on);
      button.title = !on && this.observedByOthers(path) ? "also observed by the server or another client" : "";
    };
    button.addEventListener("click", async () => {
      const id = this.observed.get(path);
      try {
        if (id) {
          await api("DELETE", `/observations/${encodeURIComponent(id)}`);
          this.observed.delete(path);
          this.log(`Stopped observing ${path}`, "ok");
        } else {
          const answer = await api("POST", devicePath(this.endpoint, "observe", path));
          this.observed.set(path, answer.observation_id);
          this.update(answer.content || []);
          this.log(`Observing ${path} (observation ${answer.observation_id})`, "ok");
        }
      } catch (err) {
        this.log(`Observe ${path} failed: ${err.message}`, "error");
      }
      label();
    });
    label();
    return button;
  }

  // Execute is two clicks: a reboot or a firmware update must not go out by a slip.
  executeButton(path) {
    const button = h("button", { type: "button", class: "execute" }, "Execute");
    let armed = null;
    button.addEventListener("click", async () => {
      if (!armed) {
        button.textContent = `Confirm execute ${path}`;
        button.classList.add("armed");
        armed = setTimeout(() => {
          armed = null;
          button.textContent = "Execute";
          button.classList.remove("armed");
        }, 5000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.textContent = "Execute";
      button.classList.remove("armed");
      try {
        const answer = await api("POST", devicePath(this.endpoint, "execute", path), { body: {} });
        this.log(`Execute ${path}: ${answer.coap_code}`, "ok");
      } catch (err) {
        this.log(`Execute ${path} failed: ${err.message}`, "error");
      }
    });
    return button;
  }
}

// -- the page ------------------------------------------------------------------------------

function registrationCard(device) {
  if (device.missing) return card("Registration", h("p", { class: "muted" }, "not registered now"));
  return card(
    "Registration",
    facts([
      ["Address", device.address],
      ["Security", device.secure ? `DTLS (${device.identity?.kind})` : "none (NoSec)"],
      ["LwM2M", device.lwm2m_version],
      ["Binding", `${device.binding}${device.queue_mode ? " (queue mode)" : ""}`],
      ["Lifetime", `${device.lifetime} s`],
      ["Registered", shortTime(device.registered_at)],
      ["Last update", ago(device.updated_at)],
      ["Expires", shortTime(device.expires_at)],
      ["Formats", (device.supported_formats || []).join(", ")],
      ["Registration id", h("code", {}, device.registration_id)],
    ]),
  );
}

function inventoryCard(record) {
  if (record.missing) return card("Inventory", h("p", { class: "muted" }, record.missing.message));
  const labels = Object.entries(record.labels || {}).map(([k, v]) => badge(v ? `${k}=${v}` : k, "label"));
  return card(
    "Inventory",
    facts([
      ["Stage", badge(record.stage)],
      ["Tenant", record.tenant],
      ["Region", record.region],
      ["Country", record.country],
      ["Carrier", record.carrier],
      ["SKU", record.sku],
      ["Policy group", record.policy_group],
      ["Firmware", record.firmware],
      ["Model", [record.manufacturer, record.model].filter(Boolean).join(" ")],
      ["Radio", record.radio],
      ["Serial", record.serial],
      ["IMEI", record.imei],
      ["EID", record.eid],
      ["Labels", labels.length ? h("span", {}, labels) : null],
      ["Groups", (record.groups || []).length ? h("span", {}, record.groups.map((g) => h("a", { href: `#/groups/${encodeURIComponent(g)}`, class: "tag" }, g))) : null],
      ["Last seen", ago(record.last_seen)],
    ]),
  );
}

function stateCard(state) {
  if (state.missing) return card("Desired vs reported", h("p", { class: "muted" }, state.missing.message));
  return card(
    "Desired vs reported",
    h(
      "div",
      { id: "device-state" },
      table(
        [
          { title: "Dimension", cell: (d) => h("strong", {}, d.dimension) },
          { title: "Status", cell: (d) => badge(d.status) },
          { title: "Desired", cell: (d) => summaryOf(d.desired) },
          { title: "Gen", cell: (d) => (d.generation ?? ""), class: "num" },
          { title: "Reported", cell: (d) => summaryOf(d.reported) },
          { title: "Seen gen", cell: (d) => (d.observed_generation ?? ""), class: "num" },
          { title: "Policy", cell: (d) => d.policy ?? "" },
          { title: "Reported at", cell: (d) => ago(d.reported_at) },
          { title: "Detail", cell: (d) => d.detail ?? "" },
        ],
        state.dimensions || [],
        "no desired or reported state yet",
      ),
    ),
  );
}

async function recentAudit(endpoint) {
  // The log pages oldest first; keep the newest few of this device's records.
  let after;
  let kept = [];
  for (let page = 0; page < 5; page++) {
    const answer = await get("/audit", { endpoint, limit: 1000, after });
    kept = [...kept, ...itemsOf(answer)].slice(-AUDIT_SHOWN);
    if (!answer.next_after) break;
    after = answer.next_after;
  }
  return kept.reverse();
}

export function auditTable(records, empty = "no audit records") {
  return table(
    [
      { title: "#", cell: (r) => String(r.seq), class: "num" },
      { title: "When", cell: (r) => shortTime(r.at) },
      { title: "Actor", cell: (r) => r.actor },
      { title: "Action", cell: (r) => h("code", {}, r.action) },
      { title: "Subject", cell: (r) => r.subject },
      { title: "Outcome", cell: (r) => badge(r.outcome || "—", r.outcome === "ok" || r.outcome === "success" ? "ok" : r.outcome) },
      { title: "Detail", cell: (r) => json(r.detail && Object.keys(r.detail).length ? r.detail : null) },
    ],
    records,
    empty,
  );
}

function eventText(type, data) {
  if (type === "notification") {
    const values = [...(data.content || []).flatMap((n) => [...leaves(n)])].map((leaf) => `${leaf.name || leaf.path} = ${formatValue(leaf)}`);
    return values.join(", ") || (data.paths || []).join(", ");
  }
  if (type === "queue_state") return `${data.operation} ${data.state}`;
  if (type === "observation_ended") return `observation ${data.observation_id}: ${data.reason}`;
  if (type === "registered" || type === "updated") return data.device?.address || "";
  return "";
}

export async function render(root, view) {
  const endpoint = view.params[0];
  const [device, record, state, audit] = await Promise.all([
    optional(get(`/devices/${encodeURIComponent(endpoint)}`)),
    optional(get(`/inventory/${encodeURIComponent(endpoint)}`)),
    optional(get(`/devices/${encodeURIComponent(endpoint)}/state`)),
    recentAudit(endpoint),
  ]);
  if (!view.current()) return;
  if (device.missing && record.missing && state.missing) throw device.missing;

  const outcome = h("div", { class: "outcome", id: "outcome", role: "status" });
  const log = (text, kind) => clear(outcome, h("span", { class: `outcome-${kind}` }, text));
  const events = h("ol", { class: "events", id: "device-events" });
  const tree = device.missing ? null : new ObjectTree(endpoint, device.objects || [], device.observations || [], log);

  clear(
    root,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, endpoint),
      record.missing ? null : badge(record.stage),
      device.missing ? badge("offline", "off") : badge("online", "ok"),
      h("span", { class: "spacer" }),
      h("a", { href: "#/" }, "← overview"),
    ),
    h("div", { class: "grid grid-2" }, registrationCard(device), inventoryCard(record)),
    card("Objects", tree ? [outcome, tree.element] : h("p", { class: "muted" }, "the object tree shows while the device is registered")),
    stateCard(state),
    card("Recent events (live)", events),
    card("Audit", h("div", { id: "device-audit" }, auditTable(audit, "no audit records about this device"))),
  );

  const stop = streamEvents({ endpoint }, (type, data) => {
    if (type === "ready" || type === "dropped") return;
    if (type === "notification" && tree) tree.update(data.content || []);
    events.prepend(h("li", {}, h("span", { class: "muted" }, new Date().toLocaleTimeString()), " ", badge(type), " ", eventText(type, data)));
    while (events.children.length > 30) events.lastChild.remove();
  }, liveState);
  view.onLeave(stop);
  if (tree) view.onLeave(() => tree.stopAll());

  // Open the Device object's instance, the one every LwM2M client has: values at a glance.
  const first = tree?.element.querySelector('button[data-instance="/3/0"]');
  if (first) first.click();
}
