// The console shell: login, navigation by URL hash, one view at a time.
//
// Routes:  #/                    fleet overview
//          #/devices/{endpoint}  one device
//          #/groups[/{name}]     groups and their members
//          #/audit               the audit log and its verification
//          #/campaigns[/{id}]    campaigns, one campaign live (waves, cohorts, gates, verbs)
// A view module exports render(root, view) and registers its cleanup (closing its event
// stream, stopping timers) with view.onLeave, which runs when the operator navigates away.

import { ApiError, get, session, whenUnauthorized } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { loadEnums } from "./values.js";
import * as audit from "./views/audit.js";
import * as campaigns from "./views/campaigns.js";
import * as device from "./views/device.js";
import * as groups from "./views/groups.js";
import * as overview from "./views/overview.js";

const ROUTES = [
  { pattern: /^\/?$/, name: "overview", module: overview },
  { pattern: /^\/devices\/([^/]+)$/, name: "overview", module: device },
  { pattern: /^\/groups$/, name: "groups", module: groups },
  { pattern: /^\/groups\/([^/]+)$/, name: "groups", module: groups },
  { pattern: /^\/audit$/, name: "audit", module: audit },
  { pattern: /^\/campaigns$/, name: "campaigns", module: campaigns },
  { pattern: /^\/campaigns\/([^/]+)$/, name: "campaigns", module: campaigns },
];

const $ = (id) => document.getElementById(id);
let leaving = [];
let generation = 0;

function leaveView() {
  for (const cleanup of leaving.splice(0)) {
    try {
      cleanup();
    } catch (err) {
      console.warn(err);
    }
  }
}

async function route() {
  leaveView();
  const mine = ++generation;
  const root = $("view");
  if (!session.token) return showLogin();
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const found = ROUTES.map((r) => ({ r, m: hash.match(r.pattern) })).find((x) => x.m);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", found && link.dataset.view === found.r.name);
  }
  if (!found) {
    clear(root, errorBox(new ApiError(404, { status: "no_view", message: `no page ${hash}` })));
    return;
  }
  clear(root, h("p", { class: "muted" }, "loading…"));
  const view = {
    params: found.m.slice(1),
    onLeave: (fn) => leaving.push(fn),
    current: () => mine === generation,
  };
  try {
    await found.r.module.render(root, view);
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof ApiError && err.httpStatus === 401) return; // login shown already
    clear(root, errorBox(err instanceof ApiError ? err : new ApiError(0, { status: "error", message: String(err) })));
    console.error(err);
  }
}

function showLogin(message) {
  leaveView();
  generation++;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("live").hidden = true;
  $("who").textContent = "";
  clear($("view"));
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
}

async function serverSummary() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    $("who").textContent = `server ${health.version} · ${health.devices} registered`;
  } catch {
    $("who").textContent = "";
  }
}

// The login check: one cheap viewer-level call; 401 means the token is wrong.
async function login(token) {
  session.token = token;
  try {
    await get("/audit/checkpoints", { limit: 1 });
  } catch (err) {
    session.token = null;
    if (err instanceof ApiError && err.httpStatus === 401) {
      return showLogin(`The server refused this token (401 ${err.kind}): ${err.message}`);
    }
    return showLogin(`Cannot log in: ${err.message}`);
  }
  showApp();
  serverSummary();
  route();
}

function start() {
  whenUnauthorized((err) => {
    session.token = null;
    showLogin(`Logged out: the server refused the token (401 ${err.kind}). ${err.message}`);
  });
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    login(token);
  });
  $("logout").addEventListener("click", () => {
    session.token = null;
    showLogin();
  });
  window.addEventListener("hashchange", () => session.token && route());
  loadEnums().then(() => {
    if (session.token) login(session.token);
    else showLogin();
  });
}

start();
