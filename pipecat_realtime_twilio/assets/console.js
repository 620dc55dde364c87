// The operator's console: the call list, one call's page, the overview.
// Vanilla JavaScript, no build step. Everything from a record is put in the page as text
// (textContent, attributes set one by one), never as HTML.
"use strict";
(function () {
  const BASE = location.pathname.replace(/console\/?$/, "");
  const KEY = "prt-console-key";
  const SID = /^CA[0-9a-fA-F]{32}$/;
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  const state = window.consoleState = {
    view: null, calls: [], total: 0, call: null, audio: null, charts: {}, error: null, loads: 0,
    info: null,
  };
  const charts = window.consoleCharts = {};
  let audioUrl = null, timelineCursor = null, timelineX = null;

  // --- small helpers -------------------------------------------------------------------------

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function svg(tag, attrs, parent) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (parent) parent.appendChild(node);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  const num = (v) => typeof v === "number" && isFinite(v);
  function when(ts) {
    if (!num(ts)) return "–";
    return new Date(ts * 1000).toLocaleString(undefined, {dateStyle: "medium", timeStyle: "medium"});
  }
  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  const secs = (v) => num(v) ? `${v.toFixed(1)} s` : "–";
  const ms = (v) => num(v) ? `${Math.round(v)} ms` : "–";
  const usd = (v, digits = 4) => num(v) ? `$${v.toFixed(digits)}` : "–";
  function show(id, text) { const node = $(id); node.textContent = text || ""; node.hidden = !text; }
  function fact(list, name, value) {
    list.appendChild(el("dt", name));
    const dd = el("dd");
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = value ?? "–";
    list.appendChild(dd);
  }
  function safeLink(url, text) {
    if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return text || url || "–";
    const a = el("a", text || url);
    a.href = url;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    return a;
  }

  // --- the key and the API -------------------------------------------------------------------

  class Refused extends Error {}
  const key = () => sessionStorage.getItem(KEY) || "";

  async function api(path, as = "json") {
    const response = await fetch(BASE + path, {headers: {Authorization: `Bearer ${key()}`}});
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(KEY);
      showLogin("The key was refused.");
      throw new Refused("refused");
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return as === "blob" ? response.blob() : response.json();
  }

  function showView(name) {
    state.view = name;
    for (const view of ["login", "calls", "call", "overview", "campaigns", "campaign"]) $(`${view}-view`).hidden = view !== name;
    $("nav").hidden = $("logout").hidden = name === "login";
    for (const a of document.querySelectorAll("#nav a")) {
      const under = {call: "calls", campaign: "campaigns"}[name];
      a.classList.toggle("current", a.dataset.view === name || a.dataset.view === under);
    }
  }

  function showLogin(message) {
    showView("login");
    show("login-error", message);
    $("key").focus();
  }

  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    try {
      await api("api/calls?limit=1");
    } catch (e) {
      if (!(e instanceof Refused)) showLogin(`The runner did not answer: ${e.message}`);
      return;
    }
    route();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(); });

  // --- the call list -------------------------------------------------------------------------

  const FILTERS = ["bot", "since", "until", "reason", "direction", "number", "search"];
  function localInput(iso) {
    const date = new Date(iso);
    if (isNaN(date)) return "";
    return new Date(date - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  }

  async function showCalls(params) {
    showView("calls");
    const form = $("filters");
    for (const name of FILTERS) {
      const value = params.get(name) || "";
      form.elements[name].value = form.elements[name].type === "datetime-local" ? localInput(value) : value;
    }
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const query = new URLSearchParams();
    for (const name of FILTERS) if (params.get(name)) query.set(name, params.get(name));
    query.set("limit", PAGE);
    query.set("offset", offset);
    show("calls-error", "");
    let page;
    try {
      page = await api(`api/calls?${query}`);
    } catch (e) {
      if (!(e instanceof Refused)) show("calls-error", e.message);
      return;
    }
    state.calls = page.calls;
    state.total = page.total;
    const body = clear($("calls-table").tBodies[0]);
    for (const call of page.calls) {
      const row = el("tr", null, "link");
      row.dataset.sid = call.call_sid;
      const reason = call.end_reason || "–";
      const cells = [
        [when(call.started_at)], [call.direction, `badge ${call.direction}`], [call.bot],
        [call.from_number || "–", "mono"], [call.to_number || "–", "mono"],
        [secs(call.duration_s), "num"], [call.turns, "num"], [ms(call.latency && call.latency.p50_ms), "num"],
        [usd(call.cost_usd), "num"], [reason, reason.startsWith("failed") ? "badge failed" : "badge"],
      ];
      for (const [text, cls] of cells) {
        const td = el("td");
        if (cls && cls.startsWith("badge")) td.appendChild(el("span", text, cls));
        else { td.textContent = text ?? "–"; if (cls) td.className = cls; }
        row.appendChild(td);
      }
      row.addEventListener("click", () => { location.hash = `#/calls/${call.call_sid}`; });
      body.appendChild(row);
    }
    $("calls-empty").hidden = page.calls.length > 0;
    const last = offset + page.calls.length;
    $("calls-range").textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "";
    const move = (to) => { params.set("offset", Math.max(0, to)); location.hash = `#/calls?${params}`; };
    $("prev").disabled = offset === 0;
    $("next").disabled = last >= page.total;
    $("prev").onclick = () => move(offset - PAGE);
    $("next").onclick = () => move(offset + PAGE);
    state.loads++;
  }

  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const input = $("filters").elements[name];
      let value = input.value.trim();
      if (value && input.type === "datetime-local") value = new Date(value).toISOString();
      if (value) params.set(name, value);
    }
    const hash = `#/calls?${params}`;
    if (location.hash === hash) route(); else location.hash = hash;
  });
  $("clear-filters").addEventListener("click", () => { location.hash = "#/calls"; });

  // --- one call --------------------------------------------------------------------------------

  async function showCall(sid) {
    showView("call");
    for (const id of ["call-facts", "analysis", "timeline", "transcript"]) clear($(id));
    clear($("cost-table").tBodies[0]);
    clear($("tools-table").tBodies[0]);
    $("call-title").textContent = sid;
    show("call-error", "");
    const audio = $("player");
    audio.pause();
    audio.hidden = true;
    audio.removeAttribute("src");
    if (audioUrl) { URL.revokeObjectURL(audioUrl); audioUrl = null; }
    state.call = null;
    state.audio = null;
    let record;
    try {
      record = await api(`api/calls/${sid}`);
      if (!state.info) state.info = await api("api/info");
    } catch (e) {
      if (!(e instanceof Refused)) show("call-error", e.message);
      return;
    }
    state.call = record;
    const start = record.started_at;
    const offsetOf = (at) => num(at) ? Math.max(0, at - start) : 0;
    $("call-title").textContent = `${record.direction === "outbound" ? "Call to" : "Call from"} ${
      (record.direction === "outbound" ? record.to_number : record.from_number) || "unknown"}`;
    callFacts(record);
    costTable(record);
    analysis(record.analysis);
    toolsTable(record, offsetOf);
    timeline(record, offsetOf);
    transcript(record, offsetOf);
    await loadRecording(record, audio);
    state.loads++;
  }

  function callFacts(r) {
    const list = $("call-facts");
    fact(list, "CallSid", el("span", r.call_sid, "mono"));
    fact(list, "Bot", r.bot);
    fact(list, "Direction", r.direction);
    fact(list, "From", r.from_number);
    fact(list, "To", r.to_number);
    fact(list, "Model", r.model);
    fact(list, "Started", when(r.started_at));
    fact(list, "Duration", secs(r.duration_s));
    fact(list, "Ended", r.end_reason);
    const lat = r.latency || {};
    fact(list, "Response latency", `p50 ${ms(lat.p50_ms)}, p90 ${ms(lat.p90_ms)} over ${(lat.response_ms || []).length} answers`);
    fact(list, "Barge-ins", String((r.barge_ins || []).length));
    if (num(r.caller_audio_dropped_ms) && r.caller_audio_dropped_ms > 0) {
      fact(list, "Caller audio dropped", ms(r.caller_audio_dropped_ms));
    }
    const hook = !(state.info && state.info.webhook_configured) ? "no webhook configured"
      : r.webhook_delivered ? "delivered" : "not delivered yet";
    fact(list, "Webhook", hook);
    if (r.twilio_recording_url) fact(list, "Twilio's recording", safeLink(r.twilio_recording_url, "open"));
    const events = (r.stream_events || []).map((e) => e.event + (e.error ? ` (${e.error})` : ""));
    if (events.length) fact(list, "Stream events", events.join(", "));
  }

  function costTable(r) {
    const body = $("cost-table").tBodies[0];
    const kinds = Object.entries(r.cost || {});
    for (const [kind, value] of kinds) {
      const row = el("tr");
      row.appendChild(el("td", kind.replace(/_/g, " ")));
      row.appendChild(el("td", usd(value, 6), "num"));
      body.appendChild(row);
    }
    const total = el("tr");
    total.appendChild(el("th", "total"));
    total.appendChild(el("th", num(r.cost_usd) ? usd(r.cost_usd, 6) : `no price for ${r.model || "the model"}`, "num"));
    body.appendChild(total);
  }

  function analysis(a) {
    const list = $("analysis");
    if (!a) { fact(list, "–", "the bot declares no analysis, or it has not run yet"); return; }
    fact(list, "Model", a.model);
    fact(list, "At", when(a.at));
    if (a.error) fact(list, "Error", a.error);
    for (const [name, value] of Object.entries(a.fields || {})) {
      const text = typeof value === "string" ? value
        : typeof value === "boolean" ? (value ? "yes" : "no") : JSON.stringify(value);
      fact(list, name.replace(/_/g, " "), text);
    }
  }

  function toolsTable(r, offsetOf) {
    const body = $("tools-table").tBodies[0];
    const tools = r.tool_calls || [];
    $("tools-panel").hidden = tools.length === 0;
    for (const t of tools) {
      const row = el("tr");
      row.appendChild(el("td", clock(offsetOf(t.at)), "num"));
      row.appendChild(el("td", t.name, "mono"));
      row.appendChild(el("td", t.arguments, "mono"));
      row.appendChild(el("td", t.error ? `error: ${t.error}` : t.result, t.error ? "error" : ""));
      row.appendChild(el("td", num(t.duration_ms) ? Math.round(t.duration_ms) : "–", "num"));
      body.appendChild(row);
    }
  }

  // A line plays from when it began: the caller's speech detected, the answer's first audio.
  const began = (turn) => num(turn.started_at) ? turn.started_at : turn.at;

  function transcript(r, offsetOf) {
    const list = $("transcript");
    const playable = !!(r.recording && r.recording.location);
    for (const turn of r.transcript || []) {
      const offset = offsetOf(began(turn));
      const li = el("li", null, `${turn.role === "bot" ? "bot" : "caller"}${turn.interrupted ? " interrupted" : ""}`);
      li.dataset.offset = String(offset);
      li.appendChild(el("span", clock(offset), "at"));
      li.appendChild(el("span", turn.role, "role"));
      li.appendChild(el("span", turn.text, "text"));
      if (playable) {
        li.classList.add("seekable");
        li.title = `Play from ${clock(offset)}`;
        li.addEventListener("click", () => seek(offset));
      }
      list.appendChild(li);
    }
    if (!(r.transcript || []).length) list.appendChild(el("li", "Nothing was said.", "muted"));
  }

  async function loadRecording(r, audio) {
    const note = $("recording-note");
    const rec = r.recording;
    if (!rec || !rec.location) { note.textContent = "No recording of this call."; return; }
    note.textContent = "Loading the recording…";
    try {
      const blob = await api(`api/calls/${r.call_sid}/recording`, "blob");
      if (state.call !== r) return;  // the page moved on meanwhile
      audioUrl = URL.createObjectURL(blob);
      audio.src = audioUrl;
      audio.hidden = false;
      state.audio = {bytes: blob.size};
      note.textContent = `Recording: ${secs(rec.duration_s)}, two channels (left the caller, right the bot). Click a line to play from it.`;
    } catch (e) {
      if (!(e instanceof Refused)) note.textContent = `The recording cannot be played: ${e.message}`;
    }
  }

  function seek(offset) {
    const audio = $("player");
    if (!audio.src) return;
    const go = () => {
      audio.currentTime = Math.min(offset, audio.duration || offset);
      audio.play().catch((e) => { state.error = String(e); });
    };
    if (audio.readyState >= 1) go(); else audio.addEventListener("loadedmetadata", go, {once: true});
  }

  $("player").addEventListener("timeupdate", () => {
    const t = $("player").currentTime;
    let current = null;
    for (const li of $("transcript").children) {
      li.classList.remove("playing");
      if (li.dataset.offset !== undefined && Number(li.dataset.offset) <= t) current = li;
    }
    if (current) current.classList.add("playing");
    if (timelineCursor && timelineX) {
      const x = timelineX(t);
      timelineCursor.setAttribute("x1", x);
      timelineCursor.setAttribute("x2", x);
    }
  });

  // The timeline: one lane per kind of event, on the recording's clock.
  function timeline(r, offsetOf) {
    const W = 1000, LEFT = 80, RIGHT = 12, LANE = 26, TOP = 8;
    const lanes = ["Caller", "Bot", "Latency", "Barge-in", "Tools", "Keypad", "Transfer"];
    const events = [
      ...(r.transcript || []).map((t) => offsetOf(t.at)),
      ...(r.turn_latencies || []).map((t) => offsetOf(t.at) + (t.response_ms || 0) / 1000),
      ...(r.tool_calls || []).map((t) => offsetOf(t.at) + (t.duration_ms || 0) / 1000),
    ];
    const span = Math.max(r.duration_s || 0, ...events, 1);
    const x = timelineX = (t) => LEFT + (Math.min(Math.max(t, 0), span) / span) * (W - LEFT - RIGHT);
    const H = TOP + lanes.length * LANE + 22;
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "timeline", role: "img"});
    svg("title", {}, root).textContent = "Timeline of the call";
    const laneY = (name) => TOP + lanes.indexOf(name) * LANE;
    lanes.forEach((name) => {
      svg("text", {x: 4, y: laneY(name) + 16, class: "lane"}, root).textContent = name;
      svg("line", {x1: LEFT, x2: W - RIGHT, y1: laneY(name) + LANE, y2: laneY(name) + LANE, class: "grid"}, root);
    });
    const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => span / s <= 10) || 1200;
    for (let t = 0; t <= span; t += step) {
      svg("line", {x1: x(t), x2: x(t), y1: TOP, y2: H - 20, class: "grid"}, root);
      svg("text", {x: x(t), y: H - 6, "text-anchor": "middle", class: "lane"}, root).textContent = clock(t);
    }
    const mark = (lane, from, to, cls, tip, label) => {
      const y = laneY(lane) + 5;
      const width = Math.max(x(to) - x(from), 4);
      const g = svg("g", {class: "mark"}, root);
      svg("rect", {x: x(from) - (to === from ? 2 : 0), y, width, height: LANE - 10, rx: 3, class: cls}, g);
      if (label) {
        const left = x(from) + width > W - 160;  // near the end: the label goes before the mark
        svg("text", {x: left ? x(from) - 5 : x(from) + width + 3, y: y + 12, class: "lane",
          "text-anchor": left ? "end" : "start"}, g).textContent = label;
      }
      svg("title", {}, g).textContent = tip;
      g.addEventListener("click", () => seek(from));
    };
    for (const t of r.transcript || []) {
      const from = offsetOf(began(t)), to = Math.max(offsetOf(t.at), from);
      const lane = t.role === "bot" ? "Bot" : "Caller";
      mark(lane, from, to, t.role === "bot" ? "bot" : "caller", `${clock(from)} ${t.role}: ${t.text}`);
    }
    for (const l of r.turn_latencies || []) {
      const at = offsetOf(l.at);
      mark("Latency", at, at + (l.response_ms || 0) / 1000, "latency", `${clock(at)} answered in ${ms(l.response_ms)}`, ms(l.response_ms));
    }
    for (const b of r.barge_ins || []) {
      const at = offsetOf(b.at);
      mark("Barge-in", at, at, "barge", `${clock(at)} the caller cut in after ${ms(b.heard_ms)} of the answer`);
    }
    for (const t of r.tool_calls || []) {
      const at = offsetOf(t.at);
      mark("Tools", at, at + (t.duration_ms || 0) / 1000, t.error ? "tool failed" : "tool",
        `${clock(at)} ${t.name}(${t.arguments}) → ${t.error ? "error: " + t.error : t.result} in ${ms(t.duration_ms)}`, t.name);
    }
    for (const k of r.keypad || []) {
      const at = offsetOf(k.at);
      mark("Keypad", at, at, "keypad", `${clock(at)} keys ${k.digits}`, k.digits);
    }
    for (const t of r.transfers || []) {
      const at = offsetOf(t.at);
      mark("Transfer", at, at, "transfer", `${clock(at)} ${t.kind} to ${t.target}`, t.target);
    }
    timelineCursor = svg("line", {x1: LEFT, x2: LEFT, y1: TOP, y2: H - 20, class: "cursor"}, root);
    $("timeline").appendChild(root);
  }

  // --- the overview ----------------------------------------------------------------------------

  const day = (text) => Date.UTC(+text.slice(0, 4), +text.slice(5, 7) - 1, +text.slice(8, 10)) / 1000;
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
  const COLORS = {calls: "#2f6fde", minutes: "#138a5b", cost: "#d08700", p50: "#2f6fde", p95: "#c0362c", reasons: "#8a63d2"};

  function bars(color) {
    return {stroke: color, fill: color + "99", width: 1, paths: uPlot.paths.bars({size: [0.6, 48]}), points: {show: false}};
  }
  // Bars stand on zero; a day's bar is centred on its day, the first and last ones too.
  const fromZero = {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]};
  const wholeDays = {time: true, range: (u, min, max) => [min - 43200, max + 43200]};

  function plot(name, options, data) {
    if (charts[name]) charts[name].destroy();
    const box = clear($(`chart-${name}`));
    options.width = Math.max(box.clientWidth, 280);
    options.height = 220;
    charts[name] = new uPlot(options, data, box);
    state.charts[name] = {points: data[0].length, series: data.length - 1};
  }

  function categories(name, labels, values, color, label) {
    if (!labels.length) {
      if (charts[name]) { charts[name].destroy(); delete charts[name]; }
      clear($(`chart-${name}`)).appendChild(el("p", "No calls in this range.", "muted"));
      state.charts[name] = {points: 0, series: 1};
      return;
    }
    const xs = labels.map((_, i) => i);
    plot(name, {
      scales: {x: {time: false, range: [-0.5, labels.length - 0.5]}, y: fromZero},
      axes: [{splits: () => xs, values: (u, splits) => splits.map((i) => labels[i] ?? "")}, {}],
      series: [{label: name === "bots" ? "bot" : "reason", value: (u, i) => labels[i] ?? ""},
        {label, ...bars(color)}],
      legend: {show: true},
    }, [xs, values]);
  }

  async function showOverview(params) {
    showView("overview");
    const days = params.get("days") || "30";
    $("range").elements.days.value = days;
    show("overview-error", "");
    let o;
    try {
      o = await api(`api/overview?days=${encodeURIComponent(days)}`);
    } catch (e) {
      if (!(e instanceof Refused)) show("overview-error", e.message);
      return;
    }
    state.overview = o;
    const tiles = clear($("totals"));
    const totals = o.totals || {};
    for (const [value, label] of [[totals.calls ?? 0, "calls"], [(totals.minutes ?? 0).toFixed(1), "minutes"], [usd(totals.cost_usd, 2), "cost"]]) {
      const tile = el("div", null, "tile");
      tile.appendChild(el("b", value));
      tile.appendChild(el("span", label));
      tiles.appendChild(tile);
    }
    const ds = o.days || [];
    const xs = ds.map((d) => day(d.day));
    plot("volume", {
      tzDate: utc,
      scales: {x: wholeDays, calls: fromZero, minutes: fromZero},
      axes: [{}, {scale: "calls", label: "calls"}, {scale: "minutes", side: 1, label: "minutes", grid: {show: false}}],
      series: [{label: "day"}, {label: "calls", scale: "calls", ...bars(COLORS.calls)},
        {label: "minutes", scale: "minutes", stroke: COLORS.minutes, width: 2}],
    }, [xs, ds.map((d) => d.calls), ds.map((d) => d.minutes)]);
    plot("cost", {
      tzDate: utc,
      scales: {x: wholeDays, y: fromZero},
      series: [{label: "day"}, {label: "USD", value: (u, v) => usd(v), ...bars(COLORS.cost)}],
    }, [xs, ds.map((d) => d.cost_usd)]);
    plot("latency", {
      tzDate: utc,
      scales: {x: wholeDays},
      series: [{label: "day"}, {label: "p50", stroke: COLORS.p50, width: 2, spanGaps: false},
        {label: "p95", stroke: COLORS.p95, width: 2, spanGaps: false}],
    }, [xs, ds.map((d) => d.response_p50_ms ?? null), ds.map((d) => d.response_p95_ms ?? null)]);
    const bots = o.by_bot || [];
    categories("bots", bots.map((b) => b.bot), bots.map((b) => b.cost_usd), COLORS.cost, "USD");
    const reasons = o.end_reasons || [];
    categories("reasons", reasons.map((r) => r.reason), reasons.map((r) => r.calls), COLORS.reasons, "calls");
    state.loads++;
  }

  $("range").addEventListener("change", () => { location.hash = `#/overview?days=${$("range").elements.days.value}`; });
  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      chart.setSize({width: Math.max($(`chart-${name}`).clientWidth, 280), height: 220});
    }
  });

  // --- campaigns -------------------------------------------------------------------------------

  const CAMPAIGN = /^cmp_[0-9a-f]{16}$/;
  const NUMBERS_PAGE = 100;
  function progressBar(c) {
    const bar = el("div", null, "progress");
    const fill = el("div", null, "progress-fill");
    fill.style.width = `${c.total ? Math.round(100 * c.done / c.total) : 0}%`;
    bar.appendChild(fill);
    const cell = el("div");
    cell.appendChild(bar);
    cell.appendChild(el("span", `${c.done}/${c.total}`, "muted"));
    return cell;
  }
  function outcomeList(outcomes) {
    const entries = Object.entries(outcomes || {}).sort((a, b) => b[1] - a[1]);
    return entries.length ? entries.map(([name, n]) => `${name} ${n}`).join(" · ") : "–";
  }

  async function showCampaigns() {
    showView("campaigns");
    show("campaigns-error", "");
    let page;
    try {
      page = await api("api/campaigns?limit=100");
    } catch (e) {
      if (!(e instanceof Refused)) show("campaigns-error", e.message);
      return;
    }
    const body = clear($("campaigns-table").tBodies[0]);
    for (const c of page.campaigns) {
      const row = el("tr", null, "link");
      row.dataset.id = c.id;
      row.appendChild(el("td", when(c.created_at)));
      row.appendChild(el("td", c.name));
      row.appendChild(el("td", c.bot));
      const status = el("td");
      status.appendChild(el("span", c.status, `badge ${c.status}`));
      row.appendChild(status);
      const progress = el("td");
      progress.appendChild(progressBar(c));
      row.appendChild(progress);
      row.appendChild(el("td", outcomeList(c.outcomes)));
      row.addEventListener("click", () => { location.hash = `#/campaigns/${c.id}`; });
      body.appendChild(row);
    }
    $("campaigns-empty").hidden = page.campaigns.length > 0;
    state.loads++;
  }

  async function showCampaign(id, params) {
    showView("campaign");
    clear($("campaign-facts"));
    show("campaign-error", "");
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    let c;
    try {
      c = await api(`api/campaigns/${id}?limit=${NUMBERS_PAGE}&offset=${offset}`);
    } catch (e) {
      if (!(e instanceof Refused)) show("campaign-error", e.message);
      return;
    }
    state.campaign = c;
    $("campaign-title").textContent = c.name;
    const facts = $("campaign-facts");
    fact(facts, "Status", c.status);
    fact(facts, "Bot", c.bot);
    fact(facts, "From", c.from);
    fact(facts, "Progress", progressBar(c));
    fact(facts, "Outcomes", outcomeList(c.outcomes));
    fact(facts, "Pace", `${c.rate_per_minute} calls/min, ${c.calling_hours} local`);
    fact(facts, "Tries", `${c.max_attempts}, retry after ${c.retry_secs} s (doubled)`);
    fact(facts, "Created", when(c.created_at));
    const body = clear($("numbers-table").tBodies[0]);
    for (const n of c.numbers) {
      const row = el("tr");
      const cells = [[n.line, "num"], [n.number, "mono"], [n.state], [n.attempts, "num"],
        [n.last_status || "–"], [n.answered_by || "–"], [n.outcome || "–"]];
      for (const [text, cls] of cells) row.appendChild(el("td", text ?? "–", cls));
      const call = el("td", null, "mono");
      if (typeof n.call_sid === "string" && SID.test(n.call_sid)) {
        const a = el("a", n.call_sid);
        a.href = `#/calls/${n.call_sid}`;
        call.appendChild(a);
      } else call.textContent = "–";
      row.appendChild(call);
      if (n.detail) row.title = n.detail;
      body.appendChild(row);
    }
    const last = offset + c.numbers.length;
    $("numbers-range").textContent = c.total ? `${offset + 1}–${last} of ${c.total}` : "";
    const move = (to) => { location.hash = `#/campaigns/${id}?offset=${Math.max(0, to)}`; };
    $("numbers-prev").disabled = offset === 0;
    $("numbers-next").disabled = last >= c.total;
    $("numbers-prev").onclick = () => move(offset - NUMBERS_PAGE);
    $("numbers-next").onclick = () => move(offset + NUMBERS_PAGE);
    state.loads++;
  }

  // --- routes ----------------------------------------------------------------------------------

  function route() {
    if (!key()) { showLogin(); return; }
    const [path, query] = (location.hash || "#/calls").slice(1).split("?");
    const params = new URLSearchParams(query || "");
    const call = path.match(/^\/calls\/([^/]+)$/);
    if (call && SID.test(call[1])) showCall(call[1]);
    else if (path === "/overview") showOverview(params);
    else if (path === "/campaigns") showCampaigns();
    else if (path.startsWith("/campaigns/") && CAMPAIGN.test(path.slice(11))) {
      showCampaign(path.slice(11), params);
    }
    else showCalls(params);
  }
  window.addEventListener("hashchange", route);
  route();
})();
