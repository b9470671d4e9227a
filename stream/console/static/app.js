// Kairos console: applies the server's deltas (Server-Sent Events from /api/stream) to the page.
// Plain JavaScript, no build step, no library. Values are written with textContent only.
"use strict";

const state = {
  seq: 0,
  window: 500,
  pushes: new Map(),   // push_id -> row
  decisions: [],       // newest last
  dead: [],
  messages: 0,         // deltas applied since the page loaded (the browser test reads it)
};
const SHOWN = 200;     // rows drawn per table; the rest of the window is kept but not drawn

const $ = (id) => document.getElementById(id);

// A time as an ISO string, or null: none given, or past what a Date holds (±8.64e12 s), where
// toISOString() throws and a single hostile timestamp would stop every later update of the page.
function isoTime(ts) {
  const d = new Date(ts * 1000);
  return ts && !isNaN(d) ? d.toISOString() : null;
}
function fmtTime(ts) {
  const iso = isoTime(ts);
  return iso ? iso.replace("T", " ").slice(0, 19) : "—";
}
function fmtShortTime(ts) {
  const iso = isoTime(ts);
  return iso ? iso.slice(5, 19).replace("T", " ") : "—";
}
function fmtDuration(seconds) {
  if (!(seconds > 0)) return "expired";
  const h = Math.floor(seconds / 3600), m = Math.round((seconds % 3600) / 60);
  if (!h) return `${m} min`;
  return m ? `${h} h ${m} min` : `${h} h`;
}
const pct = (x) => (100 * x).toFixed(1) + " %";
const num = (x) => Number(x).toLocaleString("en-US");
const money = (x) => Number(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

// A tooltip of several values, one per line. On the page each value has a cell of its own, a block
// and so its own bidi paragraph: an override in it reorders only that value. A tooltip is plain
// text, where no element can isolate a value, and ids and categories may hold bidi overrides (U+202E): on one line an override in the item
// id reversed the category and price after it. A line break ends every override, embedding and
// isolate (it ends the bidi paragraph), so each value can reorder only itself; wrapping values in
// U+2068…U+2069 would not do, as a value holding U+2069 closes the isolate early.
function tooltip(values) {
  return values.filter((v) => v).join("\n");
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function scoreCell(tr, score, threshold) {
  const td = document.createElement("td");
  td.className = "score";
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.className = score >= threshold ? "fill above" : "fill below";
  fill.style.width = Math.max(0, Math.min(100, score * 100)).toFixed(1) + "%";
  const mark = document.createElement("span");
  mark.className = "mark";
  mark.style.left = Math.max(0, Math.min(100, threshold * 100)).toFixed(1) + "%";
  bar.append(fill, mark);
  const label = document.createElement("span");
  label.textContent = `${score.toFixed(2)} ${score >= threshold ? "≥" : "<"} ${threshold.toFixed(2)}`;
  td.append(bar, label);
  tr.appendChild(td);
}

function fill(tbody, rows, draw) {
  const fragment = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement("tr");
    draw(tr, row);
    fragment.appendChild(tr);
  }
  tbody.replaceChildren(fragment);
}

function renderPushes() {
  const rows = [...state.pushes.values()].sort((a, b) => b.order - a.order).slice(0, SHOWN);
  fill($("pushes").tBodies[0], rows, (tr, p) => {
    tr.dataset.pushId = p.push_id;
    tr.dataset.status = p.status.join(" ");
    cell(tr, fmtTime(p.created_at));
    cell(tr, p.user_id, "id");
    const item = cell(tr, p.title || p.item_id);
    item.title = tooltip([p.item_id, p.category, p.price >= 0 ? money(p.price) : ""]);
    cell(tr, p.trigger.replaceAll("_", " "), "trigger t-" + p.trigger);
    cell(tr, p.reason, "reason");
    scoreCell(tr, p.score, p.threshold);
    const exp = cell(tr, fmtShortTime(p.expires_at));
    exp.title = "valid for " + fmtDuration(p.expires_at - p.created_at);
    const out = cell(tr, "");
    out.className = "outcome";
    if (!p.status.length) out.textContent = "sent";
    for (const s of p.status) {
      const badge = document.createElement("span");
      badge.className = "badge b-" + s;
      badge.textContent = s === "purchase" ? "purchased" : s === "dismiss" ? "dismissed" : s + "ed";
      out.appendChild(badge);
    }
  });
  $("pushes-empty").hidden = state.pushes.size > 0;
}

function renderDecisions() {
  const rows = state.decisions.slice(-SHOWN).reverse();
  fill($("decisions").tBodies[0], rows, (tr, d) => {
    tr.className = "o-" + d.outcome;
    cell(tr, fmtTime(d.ts));
    cell(tr, d.user_id, "id");
    cell(tr, d.item_id, "id");
    cell(tr, d.trigger.replaceAll("_", " "), "trigger t-" + d.trigger);
    cell(tr, d.outcome);
    cell(tr, d.reason.replaceAll("_", " "), "reason");
    scoreCell(tr, d.score, d.threshold);
  });
  $("decisions-empty").hidden = state.decisions.length > 0;
  const dead = state.dead.slice(-SHOWN).reverse();
  fill($("dead").tBodies[0], dead, (tr, d) => {
    cell(tr, fmtTime(d.received_at));
    cell(tr, d.reason.replaceAll("_", " "), "reason");
    cell(tr, d.source_topic || "");
    cell(tr, d.error, "error-text");
  });
  $("dead-empty").hidden = state.dead.length > 0;
}

function renderAggregates(msg) {
  const triggers = Object.entries(msg.triggers).sort((a, b) => b[1].pushes - a[1].pushes);
  const total = { pushes: 0, opens: 0, clicks: 0, dismisses: 0, purchases: 0, revenue: 0 };
  for (const [, t] of triggers) for (const k of Object.keys(total)) total[k] += t[k];
  const rate = (a, b) => (b ? a / b : 0);
  const rows = triggers.map(([name, t]) => ({ name, ...t }));
  rows.push({
    name: "all", ...total,
    open_rate: rate(total.opens, total.pushes), click_rate: rate(total.clicks, total.pushes),
    conversion: rate(total.purchases, total.pushes),
  });
  fill($("triggers").tBodies[0], rows, (tr, t) => {
    if (t.name === "all") tr.className = "total";
    tr.dataset.trigger = t.name;
    cell(tr, t.name.replaceAll("_", " "), t.name === "all" ? "" : "trigger t-" + t.name);
    for (const k of ["pushes", "opens", "clicks", "dismisses", "purchases"]) cell(tr, num(t[k]), "n");
    cell(tr, money(t.revenue), "n");
    cell(tr, pct(t.open_rate), "n");
    cell(tr, pct(t.click_rate), "n");
    cell(tr, pct(t.conversion), "n");
  });
  $("unattributed").textContent = msg.unattributed
    ? `${num(msg.unattributed)} answers named a push this console had not seen (sent before it started).` : "";
  $("attr-window").textContent = fmtDuration(msg.attribution_window_seconds);

  const h = msg.holdout;
  $("holdout-share").textContent = `holdout share ${pct(h.share)}`;
  const lines = [
    ["users seen", (g) => num(g.users)],
    ["pushes received", (g) => num(g.pushes)],
    ["purchases", (g) => num(g.purchases)],
    ["purchases per user", (g) => g.purchases_per_user.toFixed(3)],
    ["users who bought", (g) => pct(g.conversion)],
    ["revenue per user", (g) => money(g.revenue_per_user)],
  ];
  fill($("holdout").tBodies[0], lines, (tr, [label, f]) => {
    cell(tr, label);
    cell(tr, f(h.treated), "n");
    cell(tr, f(h.holdout), "n");
  });
  $("lift").textContent = h.lift === null
    ? (h.share > 0 ? "Purchases per user: not enough holdout purchases yet." : "No holdout configured (share 0).")
    : `Purchases per user, treated vs holdout: ${h.lift >= 0 ? "+" : ""}${(100 * h.lift).toFixed(1)} %`;
  if (h.lift !== null && h.holdout.purchases < 30) {
    const caveat = document.createElement("span");
    caveat.className = "caveat";
    caveat.textContent = ` (from ${h.holdout.purchases} holdout purchase${h.holdout.purchases === 1 ? "" : "s"}:`
      + " too few to trust)";
    $("lift").appendChild(caveat);
  }

  fill($("reasons").tBodies[0], msg.decision_counts.filter((d) => d.outcome !== "emitted")
    .sort((a, b) => b.count - a.count), (tr, d) => {
    tr.className = "o-" + d.outcome;
    cell(tr, d.outcome);
    cell(tr, d.reason.replaceAll("_", " "), "reason");
    cell(tr, d.trigger.replaceAll("_", " "), "trigger t-" + d.trigger);
    cell(tr, num(d.count), "n");
  });
  $("audit-note").hidden = msg.read.decisions > 0;

  $("n-events").textContent = num(msg.read.events);
  $("n-pushes").textContent = num(total.pushes);
  $("n-decisions").textContent = num(msg.read.decisions);
  $("n-dead").textContent = num(msg.read.dead_letters);
  $("last-event").textContent = fmtTime(msg.last_event_ts);
  $("window").textContent = num(msg.window);
  const missing = msg.meta && msg.meta.missing_topics && msg.meta.missing_topics.length
    ? `topics not found (yet): ${msg.meta.missing_topics.join(", ")}` : "";
  const err = (msg.meta && msg.meta.reader_error) || missing;
  $("reader-error").hidden = !err;
  $("reader-error").textContent = err ? "Topic reader: " + err : "";
}

function apply(msg) {
  if (!msg.reset && state.startedAt && msg.started_at !== state.startedAt) {
    // A new console process answered a reconnect with a delta from our old position: start over.
    fetch("/api/state?after=0").then((r) => r.json()).then(apply);
    return;
  }
  state.startedAt = msg.started_at;
  if (msg.reset) {
    state.pushes.clear();
    state.decisions = [];
    state.dead = [];
  }
  state.seq = msg.seq;
  state.window = msg.window;
  for (const p of msg.pushes) state.pushes.set(p.push_id, p);
  if (state.pushes.size > state.window) {
    const oldest = [...state.pushes.values()].sort((a, b) => a.order - b.order);
    for (const p of oldest.slice(0, state.pushes.size - state.window)) state.pushes.delete(p.push_id);
  }
  state.decisions = state.decisions.concat(msg.decisions).slice(-state.window);
  state.dead = state.dead.concat(msg.dead_letters).slice(-state.window);
  state.messages += 1;
  renderAggregates(msg);
  renderPushes();
  renderDecisions();
}

function setLive(on, text) {
  $("live").className = "dot " + (on ? "on" : "off");
  $("live-text").textContent = text;
}

function connect() {
  if (!window.EventSource) {  // very old browsers: poll the same deltas
    const poll = () => fetch(`/api/state?after=${state.seq}`).then((r) => r.json())
      .then((msg) => { apply(msg); setLive(true, "live (polling)"); })
      .catch(() => setLive(false, "disconnected, retrying"))
      .finally(() => setTimeout(poll, 1000));
    poll();
    return;
  }
  const source = new EventSource("/api/stream");
  source.onopen = () => setLive(true, "live");
  source.onmessage = (event) => { apply(JSON.parse(event.data)); setLive(true, "live"); };
  source.onerror = () => setLive(false, "disconnected, reconnecting…");  // EventSource retries by itself
}

window.kairosConsole = state;
connect();
