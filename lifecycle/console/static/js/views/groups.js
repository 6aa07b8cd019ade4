// Groups: dynamic (members follow a selector) and snapshot (the members when made), and one
// group's members. Data: GET /groups, GET /groups/{name}, GET /groups/{name}/members.

import { get, itemsOf } from "../api.js";
import { ago, badge, card, clear, deviceLink, h, table } from "../dom.js";

const PAGE = 100;

async function list(root) {
  const groups = itemsOf(await get("/groups"));
  clear(
    root,
    h("h1", {}, "Groups"),
    card(
      "Groups",
      table(
        [
          { title: "Group", cell: (g) => h("a", { href: `#/groups/${encodeURIComponent(g.name)}` }, g.name) },
          { title: "Kind", cell: (g) => badge(g.kind) },
          { title: "Selector", cell: (g) => (g.select ? h("code", {}, g.select) : h("span", { class: "muted" }, "(every device)")) },
          { title: "Members", cell: (g) => String(g.members), class: "num" },
          { title: "Tenant", cell: (g) => g.tenant ?? "" },
          { title: "Created by", cell: (g) => g.created_by },
          { title: "Created", cell: (g) => ago(g.created_at) },
        ],
        groups,
        "no groups yet: make one with `fleetloop groups create NAME --select ...`",
      ),
    ),
  );
}

async function show(root, name, view) {
  const group = await get(`/groups/${encodeURIComponent(name)}`);
  const members = h("div", { id: "group-members" });
  async function page(cursor) {
    const answer = await get(`/groups/${encodeURIComponent(name)}/members`, { limit: PAGE, cursor });
    if (!view.current()) return;
    clear(
      members,
      table(
        [
          { title: "Device", cell: (m) => deviceLink(m.endpoint) },
          { title: "Member since", cell: (m) => ago(m.since) },
        ],
        itemsOf(answer),
        "no members",
      ),
      answer.next_cursor ? h("button", { type: "button", onclick: () => page(answer.next_cursor) }, "Next page") : null,
    );
  }
  clear(
    root,
    h("div", { class: "page-head" }, h("h1", {}, group.name), badge(group.kind), h("span", { class: "spacer" }), h("a", { href: "#/groups" }, "← groups")),
    card(
      "Group",
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Selector"),
        h("dd", {}, group.select ? h("code", {}, group.select) : "(every device)"),
        h("dt", {}, "Members"),
        h("dd", {}, String(group.members)),
        h("dt", {}, "Tenant"),
        h("dd", {}, group.tenant ?? "—"),
        h("dt", {}, "Created"),
        h("dd", {}, `${group.created_at} by ${group.created_by}`),
      ),
    ),
    card("Members", members),
  );
  await page();
}

export async function render(root, view) {
  const [name] = view.params;
  if (name) await show(root, name, view);
  else await list(root);
}
