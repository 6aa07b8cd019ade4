// The audit log: its verification status (every leaf hash and every signed checkpoint
// recomputed by the server: GET /audit/verify), the signed checkpoints, and the records,
// newest first, with filters (action prefix, actor, device).

import { get, itemsOf } from "../api.js";
import { badge, card, clear, h, shortTime, table } from "../dom.js";
import { auditTable } from "./device.js";

const PAGE = 50;

function verdictBox(verdict) {
  if (verdict.ok) {
    return h(
      "div",
      { class: "verdict verdict-ok", id: "audit-verdict" },
      h("strong", {}, "Verified"),
      ` — ${verdict.records} records, ${verdict.checkpoints} signed checkpoint${verdict.checkpoints === 1 ? "" : "s"} checked; root `,
      h("code", {}, String(verdict.root_hash || "").slice(0, 16)),
      verdict.key_id ? [" · key ", h("code", {}, verdict.key_id)] : null,
    );
  }
  return h(
    "div",
    { class: "verdict verdict-bad", id: "audit-verdict", role: "alert" },
    h("strong", {}, `Verification FAILED: ${verdict.problem || "problem"}`),
    verdict.seq ? ` at record ${verdict.seq}` : "",
    verdict.checkpoint ? `, checkpoint of size ${verdict.checkpoint}` : "",
    verdict.reason ? h("div", {}, verdict.reason) : null,
  );
}

export async function render(root, view) {
  const [verdict, checkpoints] = await Promise.all([get("/audit/verify"), get("/audit/checkpoints", { limit: 5 })]);
  if (!view.current()) return;
  const records = h("div", { id: "audit-records" });
  const action = h("input", { type: "search", placeholder: "action prefix, e.g. dm.", "aria-label": "action prefix" });
  const actor = h("input", { type: "search", placeholder: "actor, e.g. operator:admin", "aria-label": "actor" });
  const endpoint = h("input", { type: "search", placeholder: "device", "aria-label": "device" });

  // The log pages oldest first (after=seq); the newest page starts near the record count.
  async function load(after) {
    const query = { action: action.value.trim(), actor: actor.value.trim(), endpoint: endpoint.value.trim(), limit: PAGE };
    const filtered = query.action || query.actor || query.endpoint;
    const start = after ?? (filtered ? undefined : Math.max(0, verdict.records - PAGE));
    let answer = await get("/audit", { ...query, after: start });
    let items = itemsOf(answer);
    if (filtered && after === undefined) {
      // A filtered view: walk to the last page (bounded) so the newest matches show first.
      for (let n = 0; n < 20 && answer.next_after; n++) {
        answer = await get("/audit", { ...query, after: answer.next_after });
        if (itemsOf(answer).length) items = [...items, ...itemsOf(answer)].slice(-PAGE);
      }
    }
    if (!view.current()) return;
    const first = items.length ? items[0].seq : 0;
    clear(
      records,
      auditTable([...items].reverse(), "no records match"),
      first > 1 ? h("button", { type: "button", onclick: () => load(Math.max(0, first - 1 - PAGE)) }, "Older") : null,
    );
  }

  clear(
    root,
    h("h1", {}, "Audit log"),
    verdictBox(verdict),
    card(
      "Signed checkpoints",
      table(
        [
          { title: "Tree size", cell: (c) => String(c.tree_size), class: "num" },
          { title: "Root hash", cell: (c) => h("code", { title: c.root_hash }, String(c.root_hash).slice(0, 16)) },
          { title: "Key", cell: (c) => h("code", {}, c.key_id) },
          { title: "Signed at", cell: (c) => shortTime(c.at) },
        ],
        [...itemsOf(checkpoints)].reverse(),
        "no checkpoints signed yet",
      ),
      checkpoints.key_id ? h("p", { class: "muted small" }, "public key id ", badge(checkpoints.key_id, "label")) : null,
    ),
    card(
      "Records",
      h(
        "form",
        {
          class: "toolbar",
          onsubmit: (event) => {
            event.preventDefault();
            load();
          },
        },
        action,
        actor,
        endpoint,
        h("button", { type: "submit" }, "Filter"),
      ),
      records,
    ),
  );
  await load();
}
