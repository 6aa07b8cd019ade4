// Campaigns: staged roll-outs with live progress per wave and cohort and their gate decisions.
//
//   #/campaigns        the list, newest first (refreshed every few seconds)
//   #/campaigns/{id}   one campaign: state and why, overall and per-wave progress, per-cohort
//                      counts with each gate's verdict and reasons, and the operator's verbs
//
// Data: GET /campaigns, GET /campaigns/{id}, GET /campaigns/{id}/report, and the campaign's
// own event stream GET /campaigns/{id}/events (a `status` snapshot after every change), so the
// page follows the campaign live without polling. The verbs are POST /campaigns/{id}/pause,
// resume, approve and abort; the server decides what a token may do (a viewer's click is
// answered 403 and shown), exactly as for the CLI.

import { API_BASE, ApiError, api, get, itemsOf, streamEvents } from "../api.js";
import { badge, card, clear, errorBox, h, liveState, shortTime, table } from "../dom.js";

const FINAL = ["succeeded", "failed", "timed_out", "reverted", "skipped"];
const ORDER = ["queued", "delivering", "verified", "succeeded", "failed", "timed_out", "reverting", "reverted", "skipped"];
const ENDED = ["completed", "aborted", "reverted"];
const LIST_REFRESH_MS = 3000;

// The page's own styles (same origin, so the CSP allows them), loaded once.
function styles() {
  if (document.getElementById("campaign-styles")) return;
  document.head.append(h("link", { id: "campaign-styles", rel: "stylesheet", href: "campaigns.css" }));
}

function countsText(counts) {
  const keys = [...ORDER.filter((k) => counts[k]), ...Object.keys(counts).filter((k) => !ORDER.includes(k) && counts[k])];
  return keys.length ? keys.map((k) => `${k} ${counts[k]}`).join(", ") : "—";
}

// A progress bar of the devices that reached a final state; one coloured segment per state.
// Widths go through the CSSOM (element.style), which the CSP allows, not a style attribute.
function progress(counts, total, label) {
  const done = FINAL.reduce((sum, k) => sum + (counts[k] || 0), 0);
  const track = h("span", { class: "cbar-track", title: countsText(counts) });
  for (const state of [...FINAL, "verified", "delivering", "reverting"]) {
    if (!counts[state] || !total) continue;
    const part = h("span", { class: `cbar-part cbar-${state}` });
    part.style.width = `${(100 * counts[state]) / total}%`;
    track.append(part);
  }
  return h(
    "span",
    { class: "cbar", dataset: { done: String(done), total: String(total) }, "aria-label": label || "progress" },
    track,
    h("span", { class: "cbar-text" }, `${done}/${total} done`),
  );
}

function stateBadge(state) {
  return badge(state, `c-${state}`);
}

// -- the list ----------------------------------------------------------------------------------

async function renderList(root, view) {
  const body = h("div", {});
  clear(
    root,
    h("div", { class: "page-head" }, h("h1", {}, "Campaigns")),
    h("p", { class: "muted" }, "Plan and create campaigns with ", h("code", {}, "fleetloop campaign plan|create -f spec.yaml"), " (or POST ", h("code", {}, `${API_BASE}/campaigns`), "); follow and steer them here."),
    body,
  );
  async function refresh() {
    let found;
    try {
      found = itemsOf(await get("/campaigns", { limit: 200 }));
    } catch (err) {
      if (!view.current()) return;
      clear(body, errorBox(err instanceof ApiError ? err : new ApiError(0, { message: String(err) })));
      return;
    }
    if (!view.current()) return;
    clear(
      body,
      card(
        "Newest first",
        h("p", { class: "muted small" }, `${found.length} in all`),
        table(
          [
            { title: "Campaign", cell: (c) => h("a", { href: `#/campaigns/${encodeURIComponent(c.id)}`, class: "campaign-link" }, c.name) },
            { title: "Id", cell: (c) => h("code", {}, c.id) },
            { title: "State", cell: (c) => stateBadge(c.state) },
            { title: "Why", cell: (c) => h("span", { class: "muted small" }, c.reason || "") },
            { title: "Tenant", cell: (c) => c.tenant || h("span", { class: "muted" }, "all") },
            { title: "Artifacts", cell: (c) => (c.artifacts || []).join(", ") },
            { title: "Created", cell: (c) => shortTime(c.created_at) },
          ],
          found,
          "no campaigns yet",
        ),
      ),
    );
  }
  await refresh();
  const timer = setInterval(refresh, LIST_REFRESH_MS);
  view.onLeave(() => clearInterval(timer));
}

// -- one campaign --------------------------------------------------------------------------------

// The verbs the campaign's state allows; the server refuses the rest anyway (409).
function verbsFor(state) {
  const out = [];
  if (state === "running") out.push(["pause", "Pause"]);
  if (["paused", "inconclusive", "halted"].includes(state)) out.push(["resume", "Resume"]);
  if (["awaiting_approval", "inconclusive"].includes(state)) out.push(["approve", "Approve"]);
  if (!ENDED.includes(state) && state !== "reverting") {
    out.push(["abort-keep", "Abort, keep changes"]);
    out.push(["abort-revert", "Abort and revert"]);
  }
  return out;
}

function waveCard(wave) {
  const gateScopes = new Set(wave.verdicts.map((v) => v.scope));
  const verdictOf = new Map(wave.verdicts.map((v) => [`${v.scope}=${v.key}`, v]));
  const rows = wave.cohorts
    .filter((c) => gateScopes.has(c.scope))
    .map((c) => ({ ...c, verdict: verdictOf.get(`${c.scope}=${c.key}`) }));
  const batch = verdictOf.get("batch=");
  if (batch) rows.push({ scope: "batch", key: "", counts: wave.counts, verdict: batch });
  return h(
    "section",
    { class: "card wave", dataset: { wave: String(wave.index), state: wave.state } },
    h(
      "div",
      { class: "wave-head" },
      h("h3", {}, `Wave ${wave.index} · ${wave.name}`),
      stateBadge(wave.state),
      h("span", { class: "muted small" }, `${wave.devices} devices · bake ${wave.bake_s} s${wave.approval ? " · approval" : ""}`),
      h("span", { class: "spacer" }),
      progress(wave.counts, wave.devices, `wave ${wave.index} progress`),
    ),
    table(
      [
        { title: "Cohort", cell: (r) => (r.scope === "batch" ? "whole wave" : `${r.scope}=${r.key || "(none)"}`) },
        { title: "Devices", cell: (r) => countsText(r.counts) },
        { title: "Progress", cell: (r) => progress(r.counts, Object.values(r.counts).reduce((a, b) => a + b, 0)) },
        { title: "Gate", cell: (r) => (r.verdict ? badge(r.verdict.verdict, `gate-${r.verdict.verdict}`) : badge("pending", "gate-pending")) },
        {
          title: "Why",
          cell: (r) =>
            r.verdict && r.verdict.reasons.length
              ? h("span", { class: "small" }, r.verdict.reasons.join("; "), r.verdict.acted && r.verdict.verdict === "failed" ? h("strong", {}, " → acted on") : null)
              : h("span", { class: "muted small" }, "—"),
        },
      ],
      rows,
      "no devices yet",
    ),
  );
}

function failuresCard(report) {
  if (!report) return null;
  const rows = report.failures || [];
  const extra = report.no_rollback_target?.length
    ? h("p", { class: "small" }, `No last-known-good value to revert to: ${report.no_rollback_target.slice(0, 10).join(", ")}`)
    : null;
  return card(
    "What failed, and why",
    table(
      [
        { title: "Devices", cell: (f) => String(f.devices), class: "num" },
        { title: "Why", cell: (f) => f.reason },
        { title: "For example", cell: (f) => h("span", { class: "small" }, f.examples.slice(0, 4).join(", ")) },
      ],
      rows,
      "no device failed",
    ),
    extra,
  );
}

async function renderCampaign(root, view, cid) {
  const head = h("div", {});
  const actions = h("div", { class: "toolbar campaign-actions" });
  const message = h("div", {});
  const wavesBox = h("div", {});
  const failuresBox = h("div", {});
  clear(
    root,
    h("p", {}, h("a", { href: "#/campaigns" }, "← all campaigns")),
    head,
    actions,
    message,
    wavesBox,
    failuresBox,
  );
  let current = null;
  let armed = null;

  async function loadReport() {
    try {
      const report = await get(`/campaigns/${encodeURIComponent(cid)}/report`, { limit: 100 });
      if (view.current()) clear(failuresBox, failuresCard(report));
    } catch (err) {
      if (view.current()) clear(failuresBox, errorBox(err));
    }
  }

  async function act(verb) {
    if (verb.startsWith("abort") && armed !== verb) {
      armed = verb; // a second click confirms: aborting cannot be undone
      draw(current);
      return;
    }
    armed = null;
    const [path, body] = verb.startsWith("abort") ? ["abort", { revert: verb === "abort-revert" }] : [verb, undefined];
    try {
      const found = await api("POST", `/campaigns/${encodeURIComponent(cid)}/${path}`, { body });
      clear(message, h("p", { class: "ok-text", role: "status" }, `${path}: the campaign is now ${found.state}`));
      draw(found);
    } catch (err) {
      clear(message, errorBox(err));
    }
  }

  function draw(status) {
    current = status;
    const reverted = status.reverted_cohorts.map((c) => `${c.scope}=${c.key}`).join(", ");
    clear(
      head,
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, status.name),
        h("span", { id: "campaign-state" }, stateBadge(status.state)),
        h("code", { class: "muted" }, status.id),
      ),
      h("p", { class: "campaign-reason" }, status.reason || h("span", { class: "muted" }, "—")),
      h(
        "div",
        { class: "stats" },
        h("div", { class: "stat" }, h("div", { class: "stat-value" }, progress(status.counts, status.devices, "campaign progress")), h("div", { class: "stat-label" }, countsText(status.counts))),
        h("div", { class: "stat" }, h("div", { class: "stat-value" }, String(status.devices)), h("div", { class: "stat-label" }, "devices"), status.conflicts ? h("div", { class: "muted small" }, `${status.conflicts} left out: held by other campaigns`) : null),
        h("div", { class: "stat" }, h("div", { class: "stat-value small" }, status.components.map((c) => `${c.dimension} ${c.artifact}`).join(", ")), h("div", { class: "stat-label" }, `created ${status.created_at.replace("T", " ").replace(/\.\d+Z$/, "")} by ${status.created_by}`)),
      ),
      reverted ? h("p", { class: "error" }, h("strong", {}, "Reverted at scope: "), reverted) : null,
    );
    clear(
      actions,
      verbsFor(status.state).map(([verb, label]) =>
        h("button", { type: "button", class: armed === verb ? "armed-verb" : undefined, dataset: { verb }, onclick: () => act(verb) }, armed === verb ? `Confirm: ${label.toLowerCase()}` : label),
      ),
    );
    clear(wavesBox, status.waves.map(waveCard));
  }

  draw(await get(`/campaigns/${encodeURIComponent(cid)}`));
  await loadReport();
  let lastReport = Date.now();
  let close = () => {};
  close = streamEvents(
    {},
    (type, data) => {
      if (!view.current()) return;
      if (type === "status") {
        draw(data);
        if (Date.now() - lastReport > 2000 || ENDED.includes(data.state)) {
          lastReport = Date.now();
          loadReport();
        }
      } else if (type === "end") {
        close(); // the campaign has ended: nothing more will come
        liveState("ended");
        loadReport();
      }
    },
    (state) => liveState(state),
    `/campaigns/${encodeURIComponent(cid)}/events`,
  );
  view.onLeave(() => {
    close();
    document.getElementById("live").hidden = true; // this page's stream, not the next one's
  });
}

export async function render(root, view) {
  styles();
  const [cid] = view.params || [];
  if (cid) return renderCampaign(root, view, cid);
  return renderList(root, view);
}
