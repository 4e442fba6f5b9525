// trygg care-staff console: open alerts for my teams, live (SSE over fetch), one tap to act.
// Plain JavaScript, no build step. Norwegian by default, English on request.
"use strict";

const T = {
  nb: {
    connecting: "Kobler til…", live: "Direkte", offline: "Frakoblet – prøver igjen",
    logout: "Logg ut", login_title: "Logg inn", token_label: "Tilgangsnøkkel", login: "Logg inn",
    bad_token: "Ukjent eller sperret nøkkel.", open_alerts: "Åpne alarmer",
    no_alerts: "Ingen åpne alarmer. Godt!", recent_events: "Siste hendelser",
    acknowledge: "Kvitter", take: "Jeg tar den", arrive: "Fremme", resolve: "Avslutt",
    accept: "Godta", cancel: "Falsk alarm",
    resident: "Beboer", team: "team", raised: "utløst", repeats: "gjentatt",
    state: { raised: "Ny", notified: "Varslet", acknowledged: "Kvittert av", assigned: "Tildelt",
      accepted: "Tatt av", arrived: "Fremme:", resolved: "Avsluttet", cancelled: "Avbrutt" },
    suppressed: "Dempet", held: "Holdt tilbake", level: "nivå", new_alert: "Ny alarm",
    no_events: "Ingen hendelser siste døgn.", ago: "siden",
    late_by: (m) => `sendt ${m} min forsinket av enheten`,
  },
  en: {
    connecting: "Connecting…", live: "Live", offline: "Offline – retrying",
    logout: "Log out", login_title: "Log in", token_label: "Access token", login: "Log in",
    bad_token: "Unknown or disabled token.", open_alerts: "Open alerts",
    no_alerts: "No open alerts. Good!", recent_events: "Recent events",
    acknowledge: "Acknowledge", take: "I'll take it", arrive: "Arrived", resolve: "Resolve",
    accept: "Accept", cancel: "False alarm",
    resident: "Resident", team: "team", raised: "raised", repeats: "repeated",
    state: { raised: "New", notified: "Notified", acknowledged: "Acknowledged by", assigned: "Assigned to",
      accepted: "Taken by", arrived: "Arrived:", resolved: "Resolved", cancelled: "Cancelled" },
    suppressed: "Silenced", held: "Held back", level: "level", new_alert: "New alert",
    no_events: "No events in the last day.", ago: "ago",
    late_by: (m) => `sent ${m} min late by the device`,
  },
};
const BUTTONS = ["take", "acknowledge", "arrive", "resolve", "accept"];
const SEV = { red: 0, yellow: 1, green: 2 };
const SEV_WORD = { nb: { red: "Rød", yellow: "Gul", green: "Grønn" }, en: { red: "Red", yellow: "Yellow", green: "Green" } };

let lang = localStorage.getItem("trygg.lang") || "nb";
let token = null;
let me = null;
const alerts = new Map();
let streamAbort = null;
let liveState = null;

const $ = (s) => document.querySelector(s);
const t = (k) => T[lang][k] ?? k;

function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("trygg.token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("trygg.token");
}

async function api(path, opts = {}) {
  const r = await fetch(path, {
    ...opts,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json", ...(opts.headers || {}) },
  });
  if (r.status === 401) { logout(t("bad_token")); throw new Error("401"); }
  return r;
}

function applyLang() {
  document.documentElement.lang = lang === "nb" ? "nb" : "en";
  $("#lang").textContent = lang === "nb" ? "EN" : "NO";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.title = "trygg – " + t("open_alerts").toLowerCase();
  if (token) setLive(liveState);
  render();
}

function logout(msg) {
  sessionStorage.removeItem("trygg.token");
  token = null; me = null;
  if (streamAbort) streamAbort.abort();
  alerts.clear();
  $("#board").hidden = true; $("#logout").hidden = true; $("#login").hidden = false;
  $("#who").textContent = "";
  $("#login-error").textContent = msg || "";
  setLive(null);
}

function setLive(on) {
  liveState = on;
  const el = $("#live");
  el.className = "live " + (on === null ? "" : on ? "on" : "off");
  el.textContent = on === null ? "" : on ? t("live") : t("offline");
}

function elapsed(iso) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
}

function sorted() {
  return [...alerts.values()]
    .filter((a) => a.state !== "resolved" && a.state !== "cancelled")
    .sort((a, b) => (SEV[a.severity] - SEV[b.severity]) || (Date.parse(b.raised_at) - Date.parse(a.raised_at)));
}

function stateText(a) {
  const s = T[lang].state[a.state] || a.state;
  if (a.state === "acknowledged") return s + " " + (a.acknowledged_by || "");
  if (["assigned", "accepted", "arrived"].includes(a.state)) return s + " " + (a.assignee || "");
  if (a.state === "notified" && a.escalation_level > 1) return s + " (" + t("level") + " " + a.escalation_level + ")";
  return s;
}

function render() {
  const list = $("#alerts");
  if (!list) return;
  const items = sorted();
  $("#count").textContent = items.length ? "(" + items.length + ")" : "";
  $("#empty").hidden = items.length > 0;
  const keep = new Set(items.map((a) => a.id));
  for (const li of [...list.children]) if (!keep.has(li.dataset.id)) li.remove();
  items.forEach((a, i) => {
    let li = list.querySelector(`li[data-id="${a.id}"]`);
    if (!li) {
      li = $("#alert-tpl").content.firstElementChild.cloneNode(true);
      li.dataset.id = a.id;
      li.querySelector("details").addEventListener("toggle", (e) => { if (e.target.open) loadTimeline(li, a.resident); });
    }
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    fill(li, a);
  });
}

function fill(li, a) {
  li.className = "alert " + a.severity + (li.classList.contains("new") ? " new" : "");
  li.dataset.state = a.state;
  li.dataset.version = a.version;
  const rw = (a.rule_words && a.rule_words[lang]) || a.title || a.rule;
  li.querySelector(".sev").textContent = SEV_WORD[lang][a.severity] + " " + a.code;
  li.querySelector(".title").textContent = rw;
  li.querySelector(".elapsed").textContent = elapsed(a.raised_at);
  li.querySelector(".elapsed").setAttribute("aria-label", elapsed(a.raised_at) + " " + t("ago"));
  let meta = t("resident") + " " + a.resident + " · " + t("team") + " " + a.team;
  if (a.repeat_count) meta += " · " + t("repeats") + " " + a.repeat_count + "×";
  // An alarm that reached trygg late is alerted all the same; say how late.
  const late = a.signal_at ? (Date.parse(a.raised_at) - Date.parse(a.signal_at)) / 60000 : 0;
  if (late >= 1) meta += " · " + T[lang].late_by(Math.round(late));
  li.querySelector(".meta").textContent = meta;
  const st = li.querySelector(".state");
  st.innerHTML = "";
  const strong = document.createElement("strong");
  strong.textContent = stateText(a);
  st.appendChild(strong);
  if (a.suppressed) { st.append(" · " + t("suppressed") + ": " + (a.suppressed_reason || "")); st.classList.add("suppressed"); }
  else if (a.held_until) st.append(" · " + t("held"));
  const box = li.querySelector(".actions");
  const allowed = (a.allowed_actions || []).filter((x) => BUTTONS.includes(x));
  // "take" already acknowledges; offer acknowledge only when take is not possible
  const show = allowed.includes("take") ? allowed.filter((x) => x !== "accept") : allowed;
  const have = [...box.children].map((b) => b.dataset.action).join(",");
  if (have !== show.join(",") || box.dataset.lang !== lang) {
    box.innerHTML = ""; box.dataset.lang = lang;
    for (const act of show) {
      const b = document.createElement("button");
      b.type = "button"; b.dataset.action = act; b.textContent = t(act);
      if (act === "take" || act === "arrive" || act === "resolve") b.classList.add("go");
      b.addEventListener("click", () => doAction(li, act));
      box.appendChild(b);
    }
  }
}

async function doAction(li, action) {
  const id = li.dataset.id;
  const err = li.querySelector(".error");
  err.textContent = "";
  li.querySelectorAll(".actions button").forEach((b) => (b.disabled = true));
  const body = { expected_version: Number(li.dataset.version) };
  if (action === "resolve") body.outcome = "helped";
  try {
    const r = await api(`/api/alerts/${id}/${action}`, { method: "POST", body: JSON.stringify(body) });
    const j = await r.json();
    if (r.ok) { alerts.set(id, j.alert); }
    else {
      err.textContent = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
      const fresh = await api(`/api/alerts/${id}`);
      if (fresh.ok) alerts.set(id, (await fresh.json()).alert);
    }
  } catch (e) { err.textContent = String(e); }
  render();
  li.querySelectorAll(".actions button").forEach((b) => (b.disabled = false));
}

async function loadTimeline(li, resident) {
  const ol = li.querySelector(".timeline");
  const r = await api(`/api/residents/${encodeURIComponent(resident)}/timeline?hours=24`);
  if (!r.ok) return;
  const j = await r.json();
  ol.innerHTML = "";
  if (!j.events.length) { const p = document.createElement("li"); p.textContent = t("no_events"); ol.appendChild(p); }
  for (const e of j.events.slice(0, 15)) {
    const item = document.createElement("li");
    const tm = document.createElement("time");
    tm.dateTime = e.time;
    tm.textContent = new Date(e.time).toLocaleTimeString(lang === "nb" ? "nb-NO" : "en-GB", { hour: "2-digit", minute: "2-digit" });
    item.appendChild(tm);
    item.append(e.words[lang]);
    ol.appendChild(item);
  }
}

function announce(a) {
  const rw = (a.rule_words && a.rule_words[lang]) || a.rule;
  $("#announce").textContent = `${t("new_alert")}: ${SEV_WORD[lang][a.severity]} ${rw}, ${t("resident")} ${a.resident}`;
}

async function loadOpen() {
  const r = await api("/api/alerts?state=open&limit=500");
  if (!r.ok) return;
  const j = await r.json();
  alerts.clear();
  for (const a of j.alerts) alerts.set(a.id, a);
  render();
}

async function stream() {
  // EventSource cannot send an Authorization header, so read the SSE stream with fetch.
  let delay = 1000;
  while (token) {
    streamAbort = new AbortController();
    try {
      const r = await fetch("/api/stream", { headers: { "Authorization": "Bearer " + token }, signal: streamAbort.signal });
      if (r.status === 401) { logout(t("bad_token")); return; }
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      setLive(true); delay = 1000;
      await loadOpen(); // whatever happened while we were away
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (data) onMessage(JSON.parse(data));
        }
      }
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function onMessage(m) {
  if (m.type === "resync") { loadOpen(); return; }
  if (!m.alert) return;
  const a = m.alert;
  const known = alerts.has(a.id);
  const prev = alerts.get(a.id);
  if (prev && prev.version > a.version) return; // an older view
  alerts.set(a.id, a);
  render();
  if (!known && a.state !== "resolved" && a.state !== "cancelled") {
    const li = $(`#alerts li[data-id="${a.id}"]`);
    if (li) li.classList.add("new");
    announce(a);
  }
}

async function start() {
  token = readToken();
  if (!token) { $("#login").hidden = false; return; }
  const r = await api("/api/me").catch(() => null);
  if (!r || !r.ok) return;
  me = await r.json();
  $("#who").textContent = me.name + (me.teams.length ? " · " + me.teams.join(", ") : "");
  $("#login").hidden = true; $("#board").hidden = false; $("#logout").hidden = false;
  await loadOpen();
  stream();
}

$("#login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("trygg.token", $("#token").value.trim());
  $("#token").value = "";
  start();
});
$("#logout").addEventListener("click", () => logout(""));
$("#lang").addEventListener("click", () => {
  lang = lang === "nb" ? "en" : "nb";
  localStorage.setItem("trygg.lang", lang);
  applyLang();
});
setInterval(() => {
  document.querySelectorAll("#alerts li").forEach((li) => {
    const a = alerts.get(li.dataset.id);
    if (a) li.querySelector(".elapsed").textContent = elapsed(a.raised_at);
  });
}, 1000);
applyLang();
start();
