// Campaigns: staged roll-outs with live progress per wave and cohort and their gate decisions.
//
// The place for them is kept here, in the navigation and the router, so the views slot in when
// the campaigns API lands: this page asks the server's OpenAPI document whether it offers
// /v1/campaigns and says plainly what the console can show today.

import { API_BASE } from "../api.js";
import { card, clear, h } from "../dom.js";

export async function render(root) {
  let offered = false;
  try {
    const doc = await (await fetch("/openapi.json")).json();
    offered = Object.keys(doc.paths || {}).some((p) => p.startsWith(`${API_BASE}/campaigns`));
  } catch {
    offered = false;
  }
  clear(
    root,
    h("h1", {}, "Campaigns"),
    card(
      "Not in the console yet",
      h(
        "p",
        {},
        offered
          ? `This server offers ${API_BASE}/campaigns, but this console version has no campaign views yet; use the CLI (fleetloop campaigns) meanwhile.`
          : "This server has no campaigns API yet. Campaign views (waves, cohorts, gate decisions, live progress) arrive with it.",
      ),
    ),
  );
}
