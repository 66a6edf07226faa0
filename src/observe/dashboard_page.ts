/**
 * @module
 * The dashboard page: plain HTML, inline CSS and inline JavaScript in string
 * constants, so it lives inside the program (bundle and compiled binary alike)
 * and needs no build step, no file read and no network but the gateway's own.
 * The script opens `/dashboard/events` with `EventSource` and updates the
 * page in place on each event (rows are created once, then only their text,
 * bar widths and sparkline points change); all data goes in through
 * `textContent`, never as HTML. A plan selector sends
 * `PATCH /admin/accounts/:id` with the `x-sluice-dashboard: 1` header the
 * admin API asks of cookie-authenticated writes.
 */

/** The dashboard's stylesheet (also hashed into the page's CSP). */
export const DASHBOARD_STYLE = `
:root { color-scheme: light; --ink: #1d232b; --muted: #66707c; --line: #e1e5ea;
  --ok: #2f9e5b; --warn: #d08a14; --bad: #cc3d3d; --accent: #2e63c7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
  background: #f6f7f9; }
header { display: flex; align-items: center; gap: 16px; padding: 10px 20px; background: #fff;
  border-bottom: 1px solid var(--line); }
header h1 { font-size: 17px; margin: 0; }
header .spacer { flex: 1; }
main { padding: 16px 20px; display: grid; gap: 16px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: middle; white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.num, th.num { text-align: right; }
.bar { display: inline-block; width: 120px; height: 10px; background: #eceff3; border-radius: 5px;
  overflow: hidden; vertical-align: middle; margin-right: 8px; }
.bar > div { height: 100%; width: 0; background: var(--ok); transition: width .3s; }
.bar > div.warn { background: var(--warn); }
.bar > div.full { background: var(--bad); }
svg.spark { vertical-align: middle; margin-left: 8px; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
.rps { display: inline-block; min-width: 3ch; text-align: right; }
.rejected span { margin-right: 10px; }
.rejected .hot { color: var(--bad); font-weight: 600; }
.plan-status { margin-left: 6px; font-size: 12px; color: var(--muted); }
.plan-status.error { color: var(--bad); }
#conn { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #eceff3; }
#conn.live { background: #dff3e6; color: #1d6b3c; }
#conn.down { background: #fbe2e2; color: #8f2525; }
#reload-error { background: #fbe2e2; color: #7a1f1f; border: 1px solid #efb4b4; border-radius: 6px;
  padding: 10px 14px; }
#reload-error ul { margin: 6px 0 0; padding-left: 20px; }
.filters { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; flex-wrap: wrap; }
.filters label { font-size: 12px; color: var(--muted); }
#log-tail td { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
  padding: 3px 8px; }
#log-tail tr.s4 td.status { color: var(--warn); }
#log-tail tr.s429 td.status, #log-tail tr.s5 td.status { color: var(--bad); font-weight: 600; }
.log-wrap { max-height: 420px; overflow: auto; }
.muted { color: var(--muted); }
button, select, input { font: inherit; }
`;

/** The dashboard's script (also hashed into the page's CSP). */
export const DASHBOARD_SCRIPT = `
"use strict";
const LOG_MAX = 500;
const SVG = "http://www.w3.org/2000/svg";
const $ = (selector) => document.querySelector(selector);
const rows = new Map();
const pending = new Map();
const logRecords = [];
let planNames = [];
let paused = false;

function el(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function setConnection(text, kind) {
  const conn = $("#conn");
  conn.textContent = text;
  conn.className = kind;
}

function fillPlans(select) {
  const current = select.value;
  select.replaceChildren(...planNames.map((name) => el("option", { value: name }, name)));
  if (current) select.value = current;
}

function createRow(account) {
  const id = account.id;
  const tr = el("tr", { "data-account": id });
  tr.append(el("td", { "data-field": "id" }, id));

  const planCell = el("td", { "data-field": "plan" });
  const select = el("select", { "data-plan-for": id, "aria-label": "plan of " + id });
  fillPlans(select);
  select.addEventListener("change", () => changePlan(id, select.value));
  planCell.append(select, el("span", { class: "plan-status", "data-field": "plan-status" }));

  const slotsCell = el("td", { "data-field": "slots" });
  const bar = el("span", { class: "bar" });
  bar.append(el("div"));
  slotsCell.append(bar, el("span", { class: "text" }));

  const rpsCell = el("td", { "data-field": "rps" });
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", "120");
  svg.setAttribute("height", "24");
  svg.setAttribute("viewBox", "0 0 120 24");
  svg.append(document.createElementNS(SVG, "polyline"));
  rpsCell.append(el("span", { class: "rps" }), svg);

  const rejected = el("td", { "data-field": "rejected", class: "rejected" });
  rejected.append(el("span", { "data-reason": "rate" }), el("span", { "data-reason": "concurrency" }));

  tr.append(planCell, slotsCell, rpsCell, rejected, el("td", { "data-field": "queue", class: "num" }));
  $("#accounts tbody").append(tr);
  const row = { tr, select, planStatus: planCell.lastChild, plan: account.plan };
  rows.set(id, row);
  return row;
}

function sparkPoints(values) {
  const max = Math.max(1, ...values);
  const step = 120 / Math.max(1, values.length - 1);
  return values.map((v, i) => (i * step).toFixed(1) + "," + (23 - (v / max) * 22).toFixed(1)).join(" ");
}

function updateRow(account) {
  const row = rows.get(account.id) || createRow(account);
  const tr = row.tr;
  row.plan = account.plan;
  const wanted = pending.get(account.id);
  if (wanted === undefined) row.select.value = account.plan;
  else if (wanted.plan === account.plan) pending.delete(account.id);

  const slots = tr.querySelector('[data-field="slots"]');
  const share = account.slotsLimit > 0 ? account.slotsUsed / account.slotsLimit : 0;
  const fill = slots.querySelector(".bar > div");
  fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
  fill.className = share >= 1 ? "full" : share >= 0.8 ? "warn" : "";
  slots.querySelector(".text").textContent = account.slotsUsed + " / " + account.slotsLimit;
  slots.dataset.used = String(account.slotsUsed);
  slots.dataset.limit = String(account.slotsLimit);

  const rps = tr.querySelector('[data-field="rps"]');
  rps.querySelector(".rps").textContent = String(account.requestsPerSecond);
  rps.dataset.value = String(account.requestsPerSecond);
  rps.dataset.lastMinute = String(account.sparkline.reduce((a, b) => a + b, 0));
  rps.querySelector("polyline").setAttribute("points", sparkPoints(account.sparkline));
  rps.title = account.sparkline.reduce((a, b) => a + b, 0) + " requests in the last minute";

  const rejected = account.rejectedLastMinute;
  for (const reason of ["rate", "concurrency"]) {
    const span = tr.querySelector('[data-reason="' + reason + '"]');
    span.textContent = reason + " " + rejected[reason];
    span.className = rejected[reason] > 0 ? "hot" : "";
    span.dataset.value = String(rejected[reason]);
  }
  const queue = tr.querySelector('[data-field="queue"]');
  queue.textContent = String(account.queueDepth);
  queue.dataset.value = String(account.queueDepth);
}

function setStatus(id, text, isError) {
  const row = rows.get(id);
  if (!row) return;
  row.planStatus.textContent = text;
  row.planStatus.className = "plan-status" + (isError ? " error" : "");
}

async function changePlan(id, plan) {
  pending.set(id, { plan, since: Date.now() });
  setStatus(id, "saving…", false);
  try {
    const response = await fetch("/admin/accounts/" + encodeURIComponent(id), {
      method: "PATCH",
      headers: { "content-type": "application/json", "x-sluice-dashboard": "1" },
      body: JSON.stringify({ plan }),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error((body && body.error && body.error.message) || "HTTP " + response.status);
    }
    setStatus(id, "saved", false);
    setTimeout(() => setStatus(id, "", false), 3000);
  } catch (error) {
    pending.delete(id);
    const row = rows.get(id);
    if (row) row.select.value = row.plan;
    setStatus(id, "failed: " + error.message, true);
  }
}

function showReload(reload) {
  const banner = $("#reload-error");
  if (reload.ok) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const list = el("ul");
  for (const e of reload.errors) list.append(el("li", {}, (e.path || "(file)") + ": " + e.message));
  banner.replaceChildren(
    el("strong", {}, "Plans file rejected"),
    document.createTextNode(
      " at " + new Date(reload.at).toLocaleTimeString([], { hour12: false }) + " (" + reload.source +
        "); the last good config stays live."
    ),
    list,
  );
  banner.hidden = false;
}

function statusClass(status) {
  return status === 429 ? "s429" : "s" + String(status).charAt(0);
}

function matches(record) {
  const account = $("#filter-account").value;
  const status = $("#filter-status").value;
  const decision = $("#filter-decision").value;
  if (account && (record.accountId || "") !== account) return false;
  if (decision && record.decision !== decision) return false;
  if (status) {
    const text = String(record.status);
    if (status.endsWith("xx") ? text.charAt(0) !== status.charAt(0) : text !== status) return false;
  }
  return true;
}

function logRow(record) {
  const tr = el("tr", { class: statusClass(record.status), "data-request-id": record.requestId });
  const time = new Date(record.timeMs);
  tr.append(
    el("td", {}, time.toLocaleTimeString([], { hour12: false }) + "." +
      String(time.getMilliseconds()).padStart(3, "0")),
    el("td", { class: "account" }, record.accountId || "—"),
    el("td", {}, record.method),
    el("td", { class: "path" }, record.path),
    el("td", { class: "status" }, String(record.status)),
    el("td", { class: "decision" }, record.decision),
    el("td", { class: "num" }, record.latencyMs + " ms"),
    el("td", { class: "muted" }, record.requestId),
  );
  return tr;
}

function renderLog() {
  const body = $("#log-tail tbody");
  const shown = [];
  for (let i = logRecords.length - 1; i >= 0 && shown.length < LOG_MAX; i--) {
    if (matches(logRecords[i])) shown.push(logRow(logRecords[i]));
  }
  body.replaceChildren(...shown);
}

function addLog(records, omitted) {
  for (const record of records) logRecords.push(record);
  if (logRecords.length > LOG_MAX) logRecords.splice(0, logRecords.length - LOG_MAX);
  if (omitted > 0) $("#log-omitted").textContent = omitted + " records skipped (too many per second)";
  if (paused || records.length === 0) return;
  const body = $("#log-tail tbody");
  for (const record of records) if (matches(record)) body.prepend(logRow(record));
  while (body.rows.length > LOG_MAX) body.lastChild.remove();
}

function updateAccountFilter(accounts) {
  const select = $("#filter-account");
  const ids = accounts.map((a) => a.id);
  if (select.dataset.ids === ids.join("\\n")) return;
  select.dataset.ids = ids.join("\\n");
  const current = select.value;
  select.replaceChildren(el("option", { value: "" }, "all"), ...ids.map((id) => el("option", { value: id }, id)));
  select.value = ids.includes(current) ? current : "";
}

function render(state) {
  $("#time").textContent = new Date(state.time).toLocaleTimeString([], { hour12: false });
  showReload(state.reload);
  if (state.plans.join("\\n") !== planNames.join("\\n")) {
    planNames = state.plans;
    for (const row of rows.values()) fillPlans(row.select);
  }
  const now = Date.now();
  for (const [id, wanted] of pending) if (now - wanted.since > 5000) pending.delete(id);
  const seen = new Set();
  for (const account of state.accounts) {
    seen.add(account.id);
    updateRow(account);
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  $("#no-accounts").hidden = state.accounts.length > 0;
  updateAccountFilter(state.accounts);
  addLog(state.logTail, state.logTailOmitted);
}

function connect() {
  const source = new EventSource("/dashboard/events");
  source.onopen = () => setConnection("live", "live");
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setConnection("disconnected — retrying", "down");
      setTimeout(connect, 5000);
    } else {
      setConnection("reconnecting…", "down");
    }
  };
}

for (const id of ["#filter-account", "#filter-status", "#filter-decision"]) {
  $(id).addEventListener("change", renderLog);
}
$("#log-pause").addEventListener("change", (event) => {
  paused = event.target.checked;
  if (!paused) renderLog();
});
connect();
`;

/** The dashboard, whole: markup with the style and script inline. */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>sluice dashboard</title>
<style>${DASHBOARD_STYLE}</style>
</head>
<body>
<header>
  <h1>sluice</h1>
  <span id="conn">connecting…</span>
  <span class="muted">updated <span id="time">—</span></span>
  <span class="spacer"></span>
  <form method="post" action="/dashboard/logout"><button type="submit">Log out</button></form>
</header>
<main>
  <div id="reload-error" role="alert" hidden></div>
  <section>
    <h2>Accounts</h2>
    <table id="accounts">
      <thead><tr>
        <th>Account</th><th>Plan</th><th>Slots used / limit</th><th>Req/s (last minute)</th>
        <th>429s last minute</th><th class="num">Queue</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <p id="no-accounts" class="muted" hidden>No accounts in the plans file.</p>
  </section>
  <section>
    <h2>Live log</h2>
    <div class="filters">
      <label>Account <select id="filter-account"><option value="">all</option></select></label>
      <label>Status <select id="filter-status">
        <option value="">all</option><option>2xx</option><option>3xx</option><option>4xx</option>
        <option>401</option><option>429</option><option>5xx</option>
      </select></label>
      <label>Decision <select id="filter-decision">
        <option value="">all</option><option>admitted</option><option>rate</option>
        <option>concurrency</option><option>shadow</option><option>auth</option><option>none</option>
      </select></label>
      <label><input type="checkbox" id="log-pause"> Pause</label>
      <span id="log-omitted" class="muted"></span>
    </div>
    <div class="log-wrap">
      <table id="log-tail">
        <thead><tr>
          <th>Time</th><th>Account</th><th>Method</th><th>Path</th><th>Status</th><th>Decision</th>
          <th class="num">Latency</th><th>Request ID</th>
        </tr></thead>
        <tbody></tbody>
      </table>
    </div>
  </section>
</main>
<script>${DASHBOARD_SCRIPT}</script>
</body>
</html>
`;

/** The login form's stylesheet (also hashed into its CSP). */
export const LOGIN_STYLE = `
body { margin: 0; min-height: 100vh; display: grid; place-items: center;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: #f6f7f9; color: #1d232b; }
form { background: #fff; border: 1px solid #e1e5ea; border-radius: 6px; padding: 20px 24px;
  display: grid; gap: 10px; min-width: 300px; }
h1 { font-size: 17px; margin: 0; }
input, button { font: inherit; padding: 6px 8px; }
.error { color: #cc3d3d; margin: 0; }
`;

const MESSAGES = {
  wrongToken: "That is not the admin token.",
} as const;

/** Which note the login form shows. */
export type LoginMessage = keyof typeof MESSAGES;

/** The login form, with an optional note. */
export function loginPage(message?: LoginMessage): string {
  const note = message === undefined
    ? ""
    : `<p id="login-error" class="error">${MESSAGES[message]}</p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>sluice dashboard — log in</title>
<style>${LOGIN_STYLE}</style>
</head>
<body>
<form method="post" action="/dashboard/login">
  <h1>sluice dashboard</h1>
  ${note}
  <input name="username" value="admin" autocomplete="username" hidden>
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <button type="submit">Log in</button>
</form>
</body>
</html>
`;
}
