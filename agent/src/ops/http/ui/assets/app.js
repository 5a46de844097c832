// edge-agent web UI. Read-only; every value from the agent is put on the page as
// text (textContent / createTextNode), never as HTML, so a tag value or payload
// containing markup shows as the characters it is.
"use strict";

const main = document.getElementById("main");
let stream = null;     // the current view's EventSource
let timer = null;      // the current view's refresh timer

// h("td", {class: "num"}, "12.5", child...) builds an element; strings become text.
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(head, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, head.map(x => h("th", {}, x)))), h("tbody", {}, rows));
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    return String(Math.round(v * 1000) / 1000);
  }
  return String(v);
}

function age(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function bytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1024) return (n / 1024).toFixed(1) + " KiB";
  return n + " B";
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()).trim());
  return r.json();
}

function live(on) {
  document.getElementById("live").className = on ? "on" : "";
}

// Opens the view's event stream; onEvent(name, data) for each event.
function listen(url, handlers) {
  stream = new EventSource(url);
  stream.onopen = () => live(true);
  stream.onerror = () => live(false);
  for (const [name, f] of Object.entries(handlers)) {
    stream.addEventListener(name, ev => {
      live(true);
      try { f(JSON.parse(ev.data)); } catch (e) { console.error(e); }
    });
  }
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function failed(e) {
  show(h("p", { class: "err" }, String(e.message || e)));
}

// A small SVG polyline of a driver's health (0–100).
function spark(values) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 120, hgt = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", hgt);
  const pts = [];
  (values || []).forEach((v, i) => {
    if (v === null) return;
    const x = values.length > 1 ? (i * w) / (values.length - 1) : 0;
    pts.push(x.toFixed(1) + "," + (hgt - 2 - (v / 100) * (hgt - 4)).toFixed(1));
  });
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#1f77b4");
  svg.appendChild(line);
  return svg;
}

// ---- Overview ----------------------------------------------------------------

function overview() {
  const box = h("div", {});
  show(box);
  listen("/events", { status: s => box.replaceChildren(...overviewNodes(s)) });
}

function lane(name, l) {
  if (!l) return null;
  return h("tr", {}, h("td", {}, name), h("td", { class: "num" }, l.pending), h("td", { class: "num" }, l.evicted),
    h("td", { class: "num" }, age(l.oldest_unacked_age_s)));
}

function overviewNodes(s) {
  document.getElementById("agent").textContent = "edge-agent · " + s.agent;
  const t = s.tags || {};
  const p = s.pipeline || {};
  const raised = (s.alerts.raised || []).reduce((a, b) => a + b, 0);
  const cards = h("div", { class: "cards" },
    h("div", { class: "card" }, "Uptime", h("b", {}, age(s.uptime_s))),
    h("div", { class: "card", id: "tag-counts" }, "Tags", h("b", {}, t.total),
      `${t.good} good · ${t.bad} bad · ${t.stale} stale · ${t.no_data} no data`),
    h("div", { class: "card" }, "Samples", h("b", {}, p.samples), `${p.windows} windows · ${p.unusable} unusable`),
    h("div", { class: "card" }, "Alerts raised", h("b", {}, raised), `${s.alerts.cleared} cleared`),
    h("div", { class: "card" }, "Ring", h("b", {}, `${s.ring.len} / ${s.ring.capacity}`),
      `high water ${s.ring.high_water} · dropped ${s.ring.dropped_oldest + s.ring.dropped_newest}`),
    h("div", { class: "card" }, "History", h("b", {}, bytes(s.history_bytes + s.feature_history_bytes + s.trace_bytes)),
      `${s.history_signals} signals ${bytes(s.history_bytes)}, ${s.feature_windows} windows ${bytes(s.feature_history_bytes)}, evaluations ${bytes(s.trace_bytes)}`));
  const drivers = table(["Driver", "Kind", "State", "Health", "Last 5 min", "Samples", "Last sample", "Restarts", "Last error"],
    s.drivers.map((d, i) => h("tr", { "data-driver": d.name },
      h("td", {}, d.name), h("td", {}, d.kind), h("td", { class: "state-" + d.state }, d.state),
      h("td", { class: "num" }, d.health === null ? "—" : fmt(d.health)),
      h("td", {}, spark((s.health_series || [])[i])),
      h("td", { class: "num" }, d.samples), h("td", { class: "num" }, age(d.last_sample_age_s)),
      h("td", { class: "num" }, d.restarts), h("td", {}, d.last_error || ""))));
  const out = [cards, h("h2", {}, "Drivers"), drivers];
  if (s.journal) {
    const j = s.journal;
    out.push(h("h2", {}, `Journal (${bytes(j.bytes)}, ${j.segments} segments, ${j.corrupt} corrupt)`),
      table(["Lane", "Pending", "Evicted", "Oldest unacknowledged"],
        [lane("alert", j.alert), lane("event", j.event), lane("telemetry", j.telemetry)]));
  }
  if (s.uplink) {
    out.push(h("h2", {}, "Uplink"), h("p", {}, s.uplink.connected ? "connected" : "not connected",
      ` · ${s.uplink.published || 0} published`));
  }
  if (s.models && s.models.length) {
    out.push(h("h2", {}, "Models"), modelsTable(s.models));
  }
  return out;
}

// ---- Signals -----------------------------------------------------------------

function signals() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const search = h("input", { type: "search", placeholder: "filter: name, part of a name, or a glob (line1.*)", value: q.get("filter") || "" });
  const count = h("p", { class: "muted" });
  const body = h("tbody", {});
  const tab = h("table", { id: "tags" }, h("thead", {}, h("tr", {},
    ["Signal", "Value", "Unit", "Quality", "Reason", "Age", "Driver", "Address"].map(x => h("th", {}, x)))), body);
  show(search, count, tab);
  const render = rep => {
    count.textContent = `${rep.tags.length} of ${rep.total} signals`;
    body.replaceChildren(...rep.tags.map(t => h("tr", { "data-tag": t.name },
      h("td", {}, h("a", { href: "#/signal/" + encodeURIComponent(t.name) }, t.name)),
      h("td", { class: "num value" }, fmt(t.value)),
      h("td", {}, t.unit || ""),
      h("td", { class: "quality " + t.quality.replace(" ", "-") }, t.quality),
      h("td", { class: "reason" }, t.reason || ""),
      h("td", { class: "num" }, age(t.age_s)),
      h("td", {}, t.driver), h("td", {}, t.address || ""))));
  };
  const open = () => {
    if (stream) stream.close();
    listen("/events?tags=" + encodeURIComponent(search.value), { tags: render });
  };
  let debounce = null;
  search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(open, 250); });
  open();
}

function signalPage(name) {
  let span = "recent";
  const img = h("img", { class: "plot", alt: "history of " + name });
  const info = h("div", {});
  const pick = h("p", {},
    h("a", { href: "#", "data-span": "recent" }, "last minutes (detectors: last evaluations)"), " · ",
    h("a", { href: "#", "data-span": "long" }, "last hours"));
  pick.addEventListener("click", ev => {
    const s = ev.target.getAttribute("data-span");
    if (s) { ev.preventDefault(); span = s; refresh(); }
  });
  const dets = h("div", {});
  const wins = h("div", {});
  const chosen = {}; // asset → the feature plotted for its window
  show(h("h2", {}, name), info, pick, img, dets, wins);
  const q = encodeURIComponent, now = () => "&t=" + Date.now();
  const windows = list => {
    if (wins.childElementCount === list.length) return;
    wins.replaceChildren(...list.map(w => {
      chosen[w.asset] = chosen[w.asset] || w.features[0];
      const sel = h("select", { "aria-label": "feature" }, ...w.features.map(f => h("option", { value: f }, f)));
      sel.value = chosen[w.asset];
      sel.addEventListener("change", () => { chosen[w.asset] = sel.value; refresh(); });
      return h("div", { "data-window": w.asset }, h("h2", {}, `${w.asset}: window features over hours `, sel),
        h("img", { class: "plot", alt: "window feature of " + name }));
    }));
  };
  const refresh = async () => {
    img.src = "/plot/signal.svg?name=" + q(name) + "&span=" + span + now();
    try {
      const one = await getJSON("/api/signal?name=" + q(name) + "&span=" + span);
      dets.replaceChildren(...one.detectors.map(d => h("div", { "data-detector": d.asset + "/" + d.detector },
        h("h2", {}, `${d.asset} / ${d.detector}: ${d.what} (${d.kind})`),
        h("img", { class: "plot", alt: "evaluations of " + d.detector,
          src: "/plot/detector.svg?asset=" + q(d.asset) + "&detector=" + q(d.detector) + "&span=" + span + now() }))));
      windows(one.windows);
      for (const w of wins.children) {
        const a = w.getAttribute("data-window");
        w.querySelector("img").src = "/plot/feature.svg?asset=" + q(a) + "&signal=" + q(name) + "&feature=" + q(chosen[a]) + now();
      }
      const t = one.tag;
      info.replaceChildren(table(["Value", "Unit", "Quality", "Reason", "Age", "Driver", "Address", "Bad samples"], [
        h("tr", { "data-tag": t.name },
          h("td", { class: "num value" }, fmt(t.value)), h("td", {}, t.unit || ""),
          h("td", { class: "quality " + t.quality.replace(" ", "-") }, t.quality),
          h("td", { class: "reason" }, t.reason || ""), h("td", { class: "num" }, age(t.age_s)),
          h("td", {}, t.driver), h("td", {}, t.address || ""), h("td", { class: "num" }, t.bad_samples))]));
    } catch (e) {
      info.replaceChildren(h("p", { class: "err" }, String(e.message || e)));
    }
  };
  refresh();
  timer = setInterval(refresh, 2000);
}

// ---- Alerts ------------------------------------------------------------------

function alertRow(a) {
  return h("tr", { "data-alert": a.id },
    h("td", {}, a.time.wall.replace("T", " ").slice(0, 19)),
    h("td", { class: "sev-" + a.severity }, a.severity),
    h("td", {}, a.state),
    h("td", {}, h("a", { href: "#/alert/" + a.id }, a.asset + " / " + a.detector)),
    h("td", {}, a.message));
}

async function alertsPage() {
  const box = h("div", {});
  show(box);
  const refresh = async () => {
    try {
      const l = await getJSON("/api/alerts");
      const head = ["Time (UTC)", "Severity", "State", "Asset / detector", "Message"];
      box.replaceChildren(
        h("h2", {}, `Active (${l.active.length})`),
        l.active.length ? table(head, l.active.map(alertRow)) : h("p", { class: "muted" }, "No active alert."),
        h("h2", {}, "Recent"),
        l.recent.length ? table(head, l.recent.map(alertRow)) : h("p", { class: "muted" }, "No alert since start."));
    } catch (e) { failed(e); }
  };
  await refresh();
  timer = setInterval(refresh, 2000);
}

function kv(rows) {
  return table(["", ""], rows.filter(r => r[1] !== undefined).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(v)))));
}

async function alertPage(id) {
  try {
    const e = await getJSON("/api/alert?id=" + encodeURIComponent(id));
    const a = e.alert;
    const out = [
      h("h2", { class: "sev-" + a.severity }, `${a.severity} ${a.state}: ${a.asset} / ${a.detector}`),
      h("p", {}, a.message),
      h("img", { class: "plot", id: "evidence", src: e.plot, alt: "evidence plot" }),
      h("p", { class: "muted" }, "Stable link for this plot: ", h("a", { href: e.plot }, e.plot)),
      h("h2", {}, "Why"),
      kv([["kind", a.kind], ["feature", a.feature], ["score", a.score], ["limit", a.limit],
        ["predicted time to limit", a.eta_s === null ? undefined : age(a.eta_s)],
        ["interval", a.eta_range_s ? `${age(a.eta_range_s[0])} to ${a.eta_range_s[1] === null ? "unbounded" : age(a.eta_range_s[1])}` : undefined],
        ["fitted curve", a.fit ? `${a.fit.model} over the last ${age(a.fit.span_s)}` : undefined],
        ["signals", a.signals.join(", ")], ["time", a.time.wall], ["episode", a.episode],
        ["model", a.model ? `${a.model.name} ${a.model.version}` : undefined]]),
      h("h2", {}, a.model ? "Input row" : "Window features"),
      table(["Feature", "Value"], Object.entries(a.features).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, fmt(v)))))];
    if (e.binding) {
      out.push(h("h2", {}, "Model binding now"), kv([["quarantined", String(e.binding.quarantined)],
        ["level", e.binding.level || "normal"], ["drifted inputs", e.binding.drifted.join(", ") || "none"]]));
    }
    out.push(h("h2", {}, "Episode"), table(["Time (UTC)", "Severity", "State", "Asset / detector", "Message"], e.episode.map(alertRow)));
    show(...out);
  } catch (e) { failed(e); }
}

// ---- Models ------------------------------------------------------------------

function modelsTable(models) {
  return table(["Model", "Version", "sha256", "Swaps", "Rejections", "Last rejection", "Bindings"],
    models.map(m => h("tr", { "data-model": m.name },
      h("td", {}, m.name), h("td", {}, m.version), h("td", { title: m.sha256 }, m.sha256.slice(0, 12)),
      h("td", { class: "num" }, m.swaps), h("td", { class: "num" }, m.rejections), h("td", {}, m.last_rejection || ""),
      h("td", {}, m.bindings.map(b => h("div", {},
        `${b.asset}/${b.binding}: ${b.quarantined ? "quarantined" : (b.level || "normal")}` +
        (b.drifted.length ? ` · drift: ${b.drifted.join(", ")}` : "")))))));
}

function qualityTable(models) {
  const rows = models.filter(m => m.quality && typeof m.quality === "object").map(m =>
    h("tr", { "data-quality": m.name }, h("td", {}, m.name),
      h("td", {}, Object.entries(m.quality).map(([k, v]) => h("div", {}, `${k.replace(/_/g, " ")}: ${fmt(v)}`)))));
  return rows.length ? table(["Model", "Held-out evaluation (quality.json)"], rows)
    : h("p", { class: "muted" }, "No training quality file (quality.json) next to the manifests.");
}

// A model's versions (loads, swaps, rejections) and each binding's scores over hours.
function modelDetail(m) {
  const q = encodeURIComponent;
  return [h("h2", {}, `${m.name}: versions`),
    table(["Time (UTC)", "Event", "Version", "sha256", "Detail"], (m.history || []).slice().reverse().map(e =>
      h("tr", { "data-version-event": e.event },
        h("td", {}, new Date(e.at_ms).toISOString().replace("T", " ").slice(0, 19)), h("td", {}, e.event),
        h("td", {}, e.version), h("td", { title: e.sha256 }, e.sha256.slice(0, 12)), h("td", {}, e.detail || "")))),
    ...m.bindings.map(b => h("div", { "data-binding": b.asset + "/" + b.binding },
      h("h2", {}, `${b.asset} / ${b.binding}: scores over hours`),
      h("img", { class: "plot", alt: "scores of " + b.binding,
        src: "/plot/detector.svg?asset=" + q(b.asset) + "&detector=" + q(b.binding) + "&span=long&t=" + Date.now() })))];
}

async function modelsPage() {
  const box = h("div", {});
  show(box);
  const refresh = async () => {
    try {
      const models = await getJSON("/api/models");
      box.replaceChildren(h("h2", {}, "Models"),
        models.length ? modelsTable(models) : h("p", { class: "muted" }, "No model configured."),
        h("h2", {}, "Training quality"), qualityTable(models),
        ...models.flatMap(modelDetail));
    } catch (e) { failed(e); }
  };
  await refresh();
  timer = setInterval(refresh, 5000);
}

// ---- Router ------------------------------------------------------------------

function route() {
  if (stream) { stream.close(); stream = null; }
  if (timer) { clearInterval(timer); timer = null; }
  live(false);
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  for (const a of document.querySelectorAll("nav a")) {
    const target = a.getAttribute("href").slice(1);
    a.className = (target === "/" ? path === "/" : path.startsWith(target)) ? "on" : "";
  }
  if (path.startsWith("/signal/")) return signalPage(decodeURIComponent(path.slice(8)));
  if (path.startsWith("/alert/")) return alertPage(decodeURIComponent(path.slice(7)));
  if (path === "/signals") return signals();
  if (path === "/alerts") return alertsPage();
  if (path === "/models") return modelsPage();
  return overview();
}

window.addEventListener("hashchange", route);
route();
