// trygg care-staff console: the on-call tool on a phone. Open alerts of my teams,
// live (SSE over fetch); red alarms ring (Web Audio), vibrate and show a system
// notification until someone answers; resolving asks what it was and can be undone
// for a few seconds; suppressed alerts sit apart; technical alerts of one outage are
// one card. Plain JavaScript, no build step. Norwegian by default, English on request.
// Signed in by a session cookie (HttpOnly: this script never sees a token): an
// enrolled phone, the identity provider, or a token typed in once (docs/api.md).
"use strict";

const T = {
  nb: {
    connecting: "Kobler til…", live: "Direkte", offline: "Frakoblet – prøver igjen",
    logout: "Logg ut", login_title: "Logg inn", token_label: "Tilgangsnøkkel", login: "Logg inn",
    bad_token: "Ukjent eller sperret nøkkel.", open_alerts: "Åpne alarmer",
    session_ended: "Innloggingen er avsluttet eller utløpt. Logg inn på nytt.",
    district: (names) => (names.length > 1 ? "Bydeler " : "Bydel ") + names.join(", "),
    oidc_login: "Logg inn med kommunens konto", or_token: "eller med tilgangsnøkkel:",
    phones: "Telefoner", enrol_title: "Koble til en telefon", enrol_user: "Bruker",
    enrol_team: "Team (for en ny bruker)", enrol_make: "Lag lenke og QR-kode",
    enrol_valid: (at) => `Skann koden med telefonen. Gjelder én gang, til ${at}.`,
    sessions_title: "Innlogginger", no_sessions: "Ingen innlogginger.", revoke: "Trekk tilbake",
    this_device: "denne enheten", until: (at) => `til ${at}`,
    kind: { enrolled: "telefon", oidc: "kommunekonto", token: "nøkkel" },
    revoked_ok: (who) => `Innloggingen til ${who} er trukket tilbake.`,
    no_alerts: "Ingen åpne alarmer. Godt!", recent_events: "Siste hendelser",
    acknowledge: "Kvitter", take: "Jeg tar den", arrive: "Fremme", resolve: "Avslutt",
    accept: "Godta", cancel: "Falsk alarm", ack_all: (n) => `Kvitter alle (${n})`,
    resident: "Beboer", team: "team", raised: "utløst", repeats: "gjentatt",
    state: { raised: "Ny", notified: "Varslet", acknowledged: "Kvittert av", assigned: "Tildelt",
      accepted: "Tatt av", arrived: "Fremme:", resolved: "Avsluttet", cancelled: "Avbrutt" },
    suppressed: "Dempet", held: "Holdt tilbake", level: "nivå", new_alert: "Ny alarm",
    new_alerts: (n) => `${n} nye alarmer`,
    among: (n, w) => `${n} nye alarmer, blant dem: ${w}`, reds: (n, r) => `${n} nye alarmer, ${r} røde`,
    lang_label: "EN (English)",
    no_events: "Ingen hendelser siste døgn.", ago: "siden",
    late_by: (m) => `sendt ${m} min forsinket av enheten`,
    duty_on: "På vakt", duty_off: "Vakt av",
    duty_note: "På vakt: skjermen holdes våken, røde alarmer varsler med lyd, vibrasjon og varsel.",
    duty_note_nolock: "På vakt: røde alarmer varsler med lyd, vibrasjon og varsel. Skjermen kan ikke holdes våken på denne enheten.",
    duty_note_nonotify: " Systemvarsler er ikke tillatt – slå dem på i nettleserens innstillinger.",
    sound_blocked: "Trykk her for å slå på alarmlyden",
    suppressed_title: "Dempet og holdt tilbake", suppressed_help: "Lagret, men ikke sendt til noen. Ingen handling trengs.",
    why_silenced: (w, until) => ["Dempet", ` av ${w.by} til ${until}: «${w.reason}»`],
    why_inhibited: (w) => ["Holdes tilbake", `: enheten ${w.device} er frakoblet`],
    why_other: ["Dempet", " av en regel"],
    held_by: (until) => ["Holdt tilbake", ` til ${until} mens en rød alarm for beboeren er åpen`],
    outcome_title: "Hvordan gikk det?", back: "Tilbake",
    outcomes: { helped: "Hjulpet", no_help_needed: "Ikke behov for hjelp", not_at_home: "Ikke hjemme", false_alarm: "Falsk alarm",
      technical: "Teknisk feil", test: "Testalarm", other: "Annet" },
    pending_resolve: (o, s) => `Avsluttes som «${o}» om ${s} s`,
    pending_cancel: (s) => `Meldes som falsk alarm om ${s} s`,
    undo: "Angre", undone: "Angret – alarmen er fortsatt åpen.",
    sent_resolve: (o) => `Avsluttet som «${o}».`,
    technical_title: (n, r) => `Tekniske varsler: ${n} alarmer hos ${r} beboere`,
    folded: (n) => `${n} enheter`, folded_meta: (n, a, b) => `${n} alarmer ${a}–${b}`,
    devices: (n) => `Vis enhetene (${n})`,
    channel_failing: (name, since) => `${name} feiler siden ${since}`,
    channel_failing_n: (name, n) => `${name} feiler (${n} forsøk)`,
    err: {
      taken: (who) => `Alarmen er allerede tatt av ${who}.`,
      resolved: "Alarmen er allerede avsluttet.",
      cancelled: "Alarmen er allerede avbrutt.",
      acked: (who) => `Alarmen er allerede kvittert av ${who}.`,
      changed: (step, who, at) => `${who} har ${step} alarmen kl. ${at} etter at du så på den. Se på den igjen.`,
      version: "Alarmen er endret. Se på den igjen.",
      mine: "Du har allerede tatt denne alarmen.",
      assigned_other: (who) => `Alarmen er tildelt ${who}; bare de kan godta den.`,
      not_assigned: "Alarmen er ikke tildelt noen ennå.",
      arrived: (who) => `${who} er allerede fremme.`,
      take_first: "Ta alarmen før du melder at du er fremme.",
      ack_first: "Kvitter alarmen før du avslutter den (eller meld falsk alarm).",
      other_team: (team) => `Alarmen hører til team ${team}, ikke ditt.`,
      no_alert: "Alarmen finnes ikke lenger.",
      role: "Rollen din kan ikke gjøre dette.",
      why_cancel: "Si hvorfor alarmen avbrytes.",
      suppressed: "Alarmen er dempet; den er lagret, ikke sendt.",
      bad_request: "Ugyldig forespørsel.",
      unavailable: "trygg svarer ikke akkurat nå. Prøv igjen.",
      timeout: "Ingen bekreftelse i tide. Sjekk alarmen og prøv igjen.",
      network: "Ingen forbindelse med trygg. Prøv igjen.",
      unknown: (s) => `Handlingen ble avvist (${s}).`,
    },
    step: { acknowledged: "kvittert", assigned: "tildelt", accepted: "tatt", arrived: "meldt fremme på",
      resolved: "avsluttet", cancelled: "avbrutt", notified: "varslet", raised: "utløst" },
  },
  en: {
    connecting: "Connecting…", live: "Live", offline: "Offline – retrying",
    logout: "Log out", login_title: "Log in", token_label: "Access token", login: "Log in",
    bad_token: "Unknown or disabled token.", open_alerts: "Open alerts",
    session_ended: "Your sign-in has ended or expired. Sign in again.",
    district: (names) => (names.length > 1 ? "Districts " : "District ") + names.join(", "),
    oidc_login: "Sign in with your municipality account", or_token: "or with an access token:",
    phones: "Phones", enrol_title: "Enrol a phone", enrol_user: "User",
    enrol_team: "Team (for a new user)", enrol_make: "Make link and QR code",
    enrol_valid: (at) => `Scan the code with the phone. Valid once, until ${at}.`,
    sessions_title: "Sign-ins", no_sessions: "No sign-ins.", revoke: "Revoke",
    this_device: "this device", until: (at) => `until ${at}`,
    kind: { enrolled: "phone", oidc: "municipality account", token: "token" },
    revoked_ok: (who) => `${who}'s sign-in is revoked.`,
    no_alerts: "No open alerts. Good!", recent_events: "Recent events",
    acknowledge: "Acknowledge", take: "I'll take it", arrive: "Arrived", resolve: "Resolve",
    accept: "Accept", cancel: "False alarm", ack_all: (n) => `Acknowledge all (${n})`,
    resident: "Resident", team: "team", raised: "raised", repeats: "repeated",
    state: { raised: "New", notified: "Notified", acknowledged: "Acknowledged by", assigned: "Assigned to",
      accepted: "Taken by", arrived: "Arrived:", resolved: "Resolved", cancelled: "Cancelled" },
    suppressed: "Silenced", held: "Held back", level: "level", new_alert: "New alert",
    new_alerts: (n) => `${n} new alerts`,
    among: (n, w) => `${n} new alerts, among them: ${w}`, reds: (n, r) => `${n} new alerts, ${r} red`,
    lang_label: "NO (norsk)",
    no_events: "No events in the last day.", ago: "ago",
    late_by: (m) => `sent ${m} min late by the device`,
    duty_on: "On duty", duty_off: "Off duty",
    duty_note: "On duty: the screen stays awake, red alarms ring, vibrate and notify.",
    duty_note_nolock: "On duty: red alarms ring, vibrate and notify. This device cannot keep the screen awake.",
    duty_note_nonotify: " System notifications are not allowed – turn them on in the browser's settings.",
    sound_blocked: "Tap here to turn the alarm sound on",
    suppressed_title: "Silenced and held back", suppressed_help: "Stored, not sent to anyone. No action needed.",
    why_silenced: (w, until) => ["Silenced", ` by ${w.by} until ${until}: “${w.reason}”`],
    why_inhibited: (w) => ["Held back", `: device ${w.device} is offline`],
    why_other: ["Silenced", " by a rule"],
    held_by: (until) => ["Held back", ` until ${until} while a red alert for the resident is open`],
    outcome_title: "What was it?", back: "Back",
    outcomes: { helped: "Helped", no_help_needed: "No help needed", not_at_home: "Not at home", false_alarm: "False alarm",
      technical: "Technical fault", test: "Test alarm", other: "Other" },
    pending_resolve: (o, s) => `Resolving as “${o}” in ${s} s`,
    pending_cancel: (s) => `Reporting a false alarm in ${s} s`,
    undo: "Undo", undone: "Undone – the alert is still open.",
    sent_resolve: (o) => `Resolved as “${o}”.`,
    technical_title: (n, r) => `Technical alerts: ${n} alerts for ${r} residents`,
    folded: (n) => `${n} devices`, folded_meta: (n, a, b) => `${n} alerts ${a}–${b}`,
    devices: (n) => `Show the devices (${n})`,
    channel_failing: (name, since) => `${name} failing since ${since}`,
    channel_failing_n: (name, n) => `${name} failing (${n} attempts)`,
    err: {
      taken: (who) => `The alert is already taken by ${who}.`,
      resolved: "The alert is already resolved.",
      cancelled: "The alert is already cancelled.",
      acked: (who) => `The alert is already acknowledged by ${who}.`,
      changed: (step, who, at) => `${who} ${step} the alert at ${at} after you looked at it. Look again.`,
      version: "The alert has changed. Look again.",
      mine: "You have already taken this alert.",
      assigned_other: (who) => `The alert is assigned to ${who}; only they can accept it.`,
      not_assigned: "The alert is not assigned to anyone yet.",
      arrived: (who) => `${who} has already arrived.`,
      take_first: "Take the alert before recording arrival.",
      ack_first: "Acknowledge the alert before resolving it (or report a false alarm).",
      other_team: (team) => `The alert belongs to team ${team}, not yours.`,
      no_alert: "The alert no longer exists.",
      role: "Your role may not do this.",
      why_cancel: "Say why the alert is cancelled.",
      suppressed: "The alert is silenced; it is stored, not sent.",
      bad_request: "Invalid request.",
      unavailable: "trygg is not answering right now. Try again.",
      timeout: "No confirmation in time. Check the alert and try again.",
      network: "No connection to trygg. Try again.",
      unknown: (s) => `The action was refused (${s}).`,
    },
    step: { acknowledged: "acknowledged", assigned: "assigned", accepted: "took", arrived: "arrived at",
      resolved: "resolved", cancelled: "cancelled", notified: "notified", raised: "raised" },
  },
};
const BUTTONS = ["take", "acknowledge", "arrive", "resolve", "accept"];
// trygg.alerts.alert.Outcome, less auto_resolved (trygg's own); tests/test_console_words.py checks
const OUTCOMES = ["helped", "no_help_needed", "not_at_home", "false_alarm", "technical", "test", "other"];
const SEV = { red: 0, yellow: 1, green: 2 };
const SEV_WORD = { nb: { red: "Rød", yellow: "Gul", green: "Grønn" }, en: { red: "Red", yellow: "Yellow", green: "Green" } };
// Technical alerts (trygg's own T.* codes): those of one resident and rule raised
// within FOLD_GAP of each other are one outage, one card.
const TECH_RULES = new Set(["device-offline", "battery-low", "device-clock", "temperature-high", "temperature-low"]);
const FOLD_GAP_MS = 15 * 60 * 1000;
// More technical cards than this (an ingest gap, a network outage) go into a
// collapsed section of their own below the care alarms.
const TECH_INLINE = 4;
const UNDO_MS = window.TRYGG_UNDO_MS || 5000;

let lang = localStorage.getItem("trygg.lang") || "nb";
let signedIn = false; // the session cookie is HttpOnly: /api/me says who we are
let me = null;
const alerts = new Map();
const pending = new Map(); // alert id -> {action, body, label, deadline, timer}
let streamAbort = null;
let liveState = null;

const $ = (s) => document.querySelector(s);
const t = (k) => T[lang][k] ?? k;
const hhmm = (iso) => new Date(iso).toLocaleTimeString(lang === "nb" ? "nb-NO" : "en-GB", { hour: "2-digit", minute: "2-digit" });

// ------------------------------------------------------------------ words

// The API's refusals are English sentences from the alert lifecycle; say them in
// the console's language. The raw text stays in the element's title.
const ERRORS = [
  [/^alert is taken by (.+)$/, (m) => T[lang].err.taken(m[1])],
  [/^alert is already resolved$/, () => T[lang].err.resolved],
  [/^alert is already cancelled/, () => T[lang].err.cancelled],
  [/^alert is already acknowledged by (.+)$/, (m) => T[lang].err.acked(m[1])],
  [/^alert was (\w+) by (.+) at (\S+) since you looked at it/, (m) => T[lang].err.changed(T[lang].step[m[1]] || m[1], m[2], hhmm(m[3]))],
  [/^alert version \d+ is unknown/, () => T[lang].err.version],
  [/^you have already taken this alert$/, () => T[lang].err.mine],
  [/^alert is assigned to (.+); only they can accept it$/, (m) => T[lang].err.assigned_other(m[1])],
  [/^alert is not assigned to anyone yet$/, () => T[lang].err.not_assigned],
  [/^(.+) has already arrived/, (m) => T[lang].err.arrived(m[1])],
  [/^alert is already accepted by (.+)$/, (m) => T[lang].err.taken(m[1])],
  [/^alert must be taken before arrival/, () => T[lang].err.take_first],
  [/^alert must be acknowledged before it can be resolved/, () => T[lang].err.ack_first],
  [/^this belongs to team (\S+);/, (m) => T[lang].err.other_team(m[1])],
  [/^no alert /, () => T[lang].err.no_alert],
  [/^alert .* has no lifecycle records$/, () => T[lang].err.no_alert],
  [/^the \w+ role may not do this$/, () => T[lang].err.role],
  [/^say why the alert is cancelled$/, () => T[lang].err.why_cancel],
  [/^alert is suppressed/, () => T[lang].err.suppressed],
];

function errorWords(status, detail) {
  if (typeof detail === "string") {
    for (const [re, f] of ERRORS) { const m = detail.match(re); if (m) return f(m); }
  }
  if (status === 422) return T[lang].err.bad_request;
  if (status === 404) return T[lang].err.no_alert;
  if (status === 503) return T[lang].err.unavailable;
  if (status === 504) return T[lang].err.timeout;
  if (status === 0) return T[lang].err.network;
  return T[lang].err.unknown("HTTP " + status);
}

// Why a quiet alert is quiet: [label, the rest of the sentence].
function whyWords(a) {
  const w = a.suppressed_why;
  if (a.suppressed) {
    if (w && w.code === "silenced") return T[lang].why_silenced(w, w.until ? dayTime(w.until) : "?");
    if (w && w.code === "inhibited") return T[lang].why_inhibited(w);
    return T[lang].why_other;
  }
  return T[lang].held_by(hhmm(a.held_until));
}

function dayTime(iso) {
  const d = new Date(iso);
  const same = d.toDateString() === new Date().toDateString();
  const loc = lang === "nb" ? "nb-NO" : "en-GB";
  return same ? hhmm(iso) : d.toLocaleString(loc, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

// ------------------------------------------------------------------ plumbing

// /console#token=… (trygg demo, trygg users add): the token leaves the address
// bar at once and is exchanged for a session cookie; it is kept nowhere.
function tokenFromAddress() {
  const m = location.hash.match(/token=([^&]+)/);
  if (!m) return null;
  history.replaceState(null, "", location.pathname);
  return decodeURIComponent(m[1]);
}

async function signInWithToken(tok) {
  const r = await fetch("/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: tok }) }).catch(() => null);
  if (r && r.ok) { $("#login-error").textContent = ""; return true; }
  $("#login-error").textContent = !r ? T[lang].err.network : r.status === 401 || r.status === 422 ? t("bad_token")
    : errorWords(r.status, (await r.json().catch(() => ({}))).detail);
  return false;
}

function ended() { return t(me && me.session ? "session_ended" : "bad_token"); }

async function api(path, opts = {}) {
  // same-origin: the browser sends the session cookie; a change carries our Origin
  const r = await fetch(path, {
    ...opts,
    headers: { "Content-Type": "application/json", ...(opts.headers || {}) },
  });
  if (r.status === 401) { logout(ended(), false); throw new Error("401"); }
  return r;
}

// The district(s) (bydel) of the signed-in user's teams or scope, by name, in
// the header; none when the registry has only the default district.
function showDistrict() {
  const names = Object.values((me && me.district_names) || {});
  $("#district").hidden = !names.length;
  $("#district").textContent = names.length ? T[lang].district(names) : "";
}

function applyLang() {
  document.documentElement.lang = lang === "nb" ? "nb" : "en";
  $("#lang").textContent = lang === "nb" ? "EN" : "NO";
  $("#lang").setAttribute("aria-label", t("lang_label")); // the visible "EN" is in the name
  document.querySelectorAll("[data-i18n]").forEach((el) => { const v = t(el.dataset.i18n); if (typeof v === "string") el.textContent = v; });
  document.title = "trygg – " + t("open_alerts").toLowerCase();
  if (signedIn) setLive(liveState);
  showDistrict();
  setDuty(duty.on, false);
  render();
  renderChannels();
}

function logout(msg, server = true) {
  // the server revokes the session and clears its cookie
  if (server) fetch("/auth/logout", { method: "POST" }).catch(() => null);
  sessionStorage.removeItem("trygg.token"); // an older console's
  signedIn = false; me = null;
  $("#phones").hidden = true; $("#enrol-out").hidden = true;
  if (streamAbort) streamAbort.abort();
  alerts.clear();
  for (const p of pending.values()) clearInterval(p.timer);
  pending.clear();
  releaseScreen();
  $("#board").hidden = true; $("#logout").hidden = true; $("#duty").hidden = true;
  showLogin();
  $("#duty-note").hidden = true; $("#channels").hidden = true; channels = [];
  $("#who").textContent = "";
  showDistrict();
  loadedOnce = false;
  $("#login-error").textContent = msg || "";
  setLive(null);
  updateAlarm();
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

const isOpen = (a) => a.state !== "resolved" && a.state !== "cancelled";
const isQuiet = (a) => !!(a.suppressed || a.held_until);
const isTechnical = (a) => TECH_RULES.has(a.rule) || String(a.code || "").startsWith("T.");
// The devices an alert is about: one device-offline alert per resident lists every
// device that is offline (Alert.devices); older alerts name one (device).
const deviceList = (a) => (a.devices && a.devices.length ? a.devices : a.device ? [a.device] : []);
const bySevThenNewest = (a, b) => (SEV[a.severity] - SEV[b.severity]) || (Date.parse(b.raised_at) - Date.parse(a.raised_at));
// Care alarms before technical ones, then red, yellow, green, then newest first.
const byCareThenSev = (a, b) => (Number(!!a.tech) - Number(!!b.tech)) || bySevThenNewest(a, b);

// The cards of the main list: an alert, or a fold of technical alerts of one
// resident, rule and outage ({group: key, alerts: [...], severity, raised_at}).
function cards() {
  const open = [...alerts.values()].filter((a) => isOpen(a) && !isQuiet(a));
  const out = [];
  const tech = new Map();
  for (const a of open) {
    if (!isTechnical(a)) { out.push({ ...a, tech: false }); continue; }
    const k = a.resident + "|" + a.rule;
    if (!tech.has(k)) tech.set(k, []);
    tech.get(k).push(a);
  }
  for (const list of tech.values()) {
    list.sort((a, b) => Date.parse(a.raised_at) - Date.parse(b.raised_at));
    let run = [];
    const flush = () => {
      if (run.length === 1) out.push({ ...run[0], tech: true });
      else if (run.length > 1) {
        const newest = run[run.length - 1];
        const sev = run.reduce((s, a) => (SEV[a.severity] < SEV[s] ? a.severity : s), "green");
        out.push({ group: "g-" + run[0].id, alerts: run, severity: sev, raised_at: newest.raised_at, resident: newest.resident, team: newest.team, rule: newest.rule, tech: true });
      }
      run = [];
    };
    for (const a of list) {
      if (run.length && Date.parse(a.raised_at) - Date.parse(run[run.length - 1].raised_at) > FOLD_GAP_MS) flush();
      run.push(a);
    }
    flush();
  }
  return out.sort(byCareThenSev);
}

// ------------------------------------------------------------------ rendering

function render() {
  const list = $("#alerts");
  if (!list) return;
  const focus = focusedCard();
  const items = cards();
  const quiet = [...alerts.values()].filter((a) => isOpen(a) && isQuiet(a)).sort(bySevThenNewest);
  const n = items.reduce((s, c) => s + (c.group ? c.alerts.length : 1), 0);
  $("#count").textContent = n ? "(" + n + ")" : "";
  $("#empty").hidden = items.length > 0;
  const tech = items.filter((c) => c.tech);
  const apart = tech.length > TECH_INLINE;
  place(list, apart ? items.filter((c) => !c.tech) : items);
  place($("#technical-list"), apart ? tech : []);
  $("#technical").hidden = !apart;
  if (apart) {
    const residents = new Set(tech.map((c) => c.resident)).size;
    const count = tech.reduce((s, c) => s + (c.group ? c.alerts.length : 1), 0);
    $("#technical-title").textContent = T[lang].technical_title(count, residents);
  }
  $("#suppressed").hidden = quiet.length === 0;
  $("#suppressed-count").textContent = "(" + quiet.length + ")";
  place($("#suppressed-list"), quiet, true);
  if (focus) keepFocus(focus);
  updateAlarm();
}

// ------------------------------------------------------------------ keyboard focus

// Re-rendering a card (its buttons rebuilt after an action, its undo gone, the card
// removed when the alert closes, moved to another section) must not drop a keyboard
// user's focus to the top of the page. Before: which card and control had it, and
// the cards around it; after: the same control, else the card, else a neighbour,
// else the list's heading.
function focusedCard() {
  const el = document.activeElement;
  const li = el && el !== document.body ? el.closest(".alerts > li") : null;
  if (!li) return null;
  const sib = (dir) => { const out = []; for (let x = li[dir]; x; x = x[dir]) out.push(x.dataset.key); return out; };
  return { key: li.dataset.key, control: el.dataset.action || null, near: [...sib("nextElementSibling"), ...sib("previousElementSibling")] };
}

const focusLost = () => !document.activeElement || document.activeElement === document.body;

function tryFocus(el) {
  if (!el || el.closest("[hidden]")) return false;
  el.focus();
  return document.activeElement === el;
}

function keepFocus(f) {
  if (!focusLost()) return;
  const card = (k) => document.querySelector(`.alerts > li[data-key="${k}"]`);
  const here = card(f.key);
  if (here) {
    if (f.control && tryFocus(here.querySelector(`button[data-action="${f.control}"]`))) return;
    if (tryFocus(here.querySelector("article"))) return;
  }
  for (const k of f.near) if (tryFocus(card(k) && card(k).querySelector("article"))) return;
  tryFocus($("#open-title"));
}

function place(list, items, quiet = false) {
  const key = (c) => c.group || c.id;
  const keep = new Set(items.map(key));
  for (const li of [...list.children]) if (!keep.has(li.dataset.key)) li.remove();
  items.forEach((c, i) => {
    const k = key(c);
    let li = list.querySelector(`li[data-key="${k}"]`);
    if (!li) {
      li = $("#alert-tpl").content.firstElementChild.cloneNode(true);
      li.dataset.key = k;
      if (!c.group) li.dataset.id = c.id; else li.dataset.group = k;
      const resident = c.resident;
      li.querySelector("details.events").addEventListener("toggle", (e) => { if (e.target.open) loadTimeline(li, resident); });
      li.querySelector("details.events summary").textContent = t("recent_events");
      const h3 = li.querySelector(".title");
      h3.id = "t-" + k;
      li.querySelector(".state").id = "s-" + k;
      const art = li.querySelector("article");
      art.setAttribute("aria-labelledby", h3.id);
      art.setAttribute("aria-describedby", "s-" + k);
      art.tabIndex = -1; // focus lands here when its button goes (see keepFocus), never by Tab
    }
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    if (c.group) fillGroup(li, c); else fill(li, c, quiet);
  });
}

function fill(li, a, quiet) {
  li.className = "alert " + a.severity + (li.classList.contains("new") ? " new" : "") + (quiet ? " quiet" : "");
  li.dataset.state = a.state;
  li.dataset.version = a.version;
  li.dataset.since = a.raised_at;
  const rw = (a.rule_words && a.rule_words[lang]) || a.title || a.rule;
  li.querySelector(".sev").textContent = SEV_WORD[lang][a.severity] + " " + a.code;
  const devs = isTechnical(a) ? deviceList(a) : [];
  li.dataset.devices = devs.length;
  li.querySelector(".title").textContent = devs.length > 1 ? rw + " · " + T[lang].folded(devs.length) : rw;
  fillDevices(li, devs.length > 1 ? devs : []);
  li.querySelector(".elapsed").textContent = elapsed(a.raised_at);
  li.querySelector(".elapsed").setAttribute("aria-label", elapsed(a.raised_at) + " " + t("ago"));
  let meta = t("resident") + " " + a.resident + " · " + t("team") + " " + a.team;
  if (devs.length === 1) meta += " · " + devs[0];
  // A folded outage records each further device as a repeat: those are counted
  // in the title ("50 enheter"); only what fired again beyond them is a repeat.
  const repeats = (a.repeat_count || 0) - Math.max(devs.length - 1, 0);
  if (repeats > 0) meta += " · " + t("repeats") + " " + repeats + "×";
  // An alarm that reached trygg late is alerted all the same; say how late.
  const late = a.signal_at ? (Date.parse(a.raised_at) - Date.parse(a.signal_at)) / 60000 : 0;
  if (late >= 1) meta += " · " + T[lang].late_by(Math.round(late));
  li.querySelector(".meta").textContent = meta;
  const st = li.querySelector(".state");
  st.innerHTML = "";
  const strong = document.createElement("strong");
  if (quiet) {
    const [label, rest] = whyWords(a);
    strong.textContent = label;
    st.append(strong, rest);
  } else {
    strong.textContent = stateText(a);
    st.appendChild(strong);
  }
  st.classList.toggle("suppressed", !!a.suppressed);
  fillPending(li, a.id);
  const box = li.querySelector(".actions");
  // A suppressed or held alert is not anyone's task: no buttons.
  let show = [];
  if (!quiet && !pending.has(a.id)) {
    const allowed = (a.allowed_actions || []).filter((x) => BUTTONS.includes(x));
    // "take" already acknowledges; offer acknowledge only when take is not possible
    show = allowed.includes("take") ? allowed.filter((x) => x !== "accept") : allowed;
    // Unanswered: it can be reported as a false alarm at once (resolve asks later).
    // Not a technical alert: a device that is offline is not a false alarm.
    if ((a.allowed_actions || []).includes("cancel") && !allowed.includes("resolve") && !isTechnical(a)) show.push("cancel");
  }
  box.hidden = show.length === 0;
  const have = [...box.children].map((b) => b.dataset.action).join(",");
  if (have !== show.join(",") || box.dataset.lang !== lang) {
    box.innerHTML = ""; box.dataset.lang = lang;
    for (const act of show) {
      const b = document.createElement("button");
      b.type = "button"; b.dataset.action = act; b.textContent = t(act);
      if (act === "take" || act === "arrive" || act === "resolve") b.classList.add("go");
      if (act === "cancel") b.classList.add("quiet-btn");
      b.addEventListener("click", () => onButton(li, act));
      box.appendChild(b);
    }
  }
}

function fillGroup(li, g) {
  const first = g.alerts[0], last = g.alerts[g.alerts.length - 1];
  li.className = "alert folded " + g.severity + (li.classList.contains("new") ? " new" : "");
  li.dataset.count = g.alerts.length;
  li.dataset.since = first.raised_at;
  li.dataset.state = "";
  const rw = (last.rule_words && last.rule_words[lang]) || last.rule;
  const devices = new Set(g.alerts.flatMap(deviceList)).size || g.alerts.length;
  li.dataset.devices = devices;
  li.querySelector(".sev").textContent = SEV_WORD[lang][g.severity] + " " + last.code;
  li.querySelector(".title").textContent = rw + " · " + T[lang].folded(devices);
  li.querySelector(".elapsed").textContent = elapsed(first.raised_at);
  li.querySelector(".elapsed").setAttribute("aria-label", elapsed(first.raised_at) + " " + t("ago"));
  li.querySelector(".meta").textContent = t("resident") + " " + g.resident + " · " + t("team") + " " + g.team +
    " · " + T[lang].folded_meta(g.alerts.length, hhmm(first.raised_at), hhmm(last.raised_at));
  const st = li.querySelector(".state");
  const unacked = g.alerts.filter((a) => (a.allowed_actions || []).includes("acknowledge"));
  st.textContent = unacked.length ? stateText(last) : stateText({ ...last, state: "acknowledged", acknowledged_by: last.acknowledged_by });
  fillDevices(li, g.alerts.flatMap((a) => {
    const d = deviceList(a);
    return (d.length ? d : [a.id]).map((x) => x + " · " + hhmm(a.raised_at));
  }));
  const box = li.querySelector(".actions");
  const label = T[lang].ack_all(unacked.length);
  box.hidden = unacked.length === 0;
  if (unacked.length && (box.firstChild === null || box.firstChild.textContent !== label)) {
    box.innerHTML = "";
    const b = document.createElement("button");
    b.type = "button"; b.dataset.action = "acknowledge-all"; b.textContent = label;
    b.addEventListener("click", () => ackAll(li));
    box.appendChild(b);
  } else if (!unacked.length) box.innerHTML = "";
}

// The devices of a technical card, listed on request ("Vis enhetene (50)").
function fillDevices(li, names) {
  const box = li.querySelector("details.devices");
  box.hidden = names.length === 0;
  if (box.hidden) return;
  box.querySelector("summary").textContent = T[lang].devices(names.length);
  const ul = box.querySelector("ul");
  if (ul.dataset.names !== names.join("|")) {
    ul.dataset.names = names.join("|");
    ul.innerHTML = "";
    for (const n of names) { const x = document.createElement("li"); x.textContent = n; ul.appendChild(x); }
  }
}

function stateText(a) {
  const s = T[lang].state[a.state] || a.state;
  if (a.state === "acknowledged") return s + " " + (a.acknowledged_by || "");
  if (["assigned", "accepted", "arrived"].includes(a.state)) return s + " " + (a.assignee || "");
  if (a.state === "notified" && a.escalation_level > 1) return s + " (" + t("level") + " " + a.escalation_level + ")";
  return s;
}

function fillPending(li, id) {
  const box = li.querySelector(".pending");
  const p = pending.get(id);
  li.classList.toggle("closing", !!p);
  if (!p) { box.hidden = true; box.innerHTML = ""; return; }
  const secs = Math.max(0, Math.ceil((p.deadline - Date.now()) / 1000));
  const text = p.action === "cancel" ? T[lang].pending_cancel(secs) : T[lang].pending_resolve(T[lang].outcomes[p.body.outcome], secs);
  box.hidden = false;
  let span = box.querySelector("span"), undo = box.querySelector("button");
  if (!span) {
    span = document.createElement("span");
    span.id = "p-" + id;
    undo = document.createElement("button");
    undo.type = "button"; undo.className = "undo"; undo.dataset.action = "undo";
    undo.setAttribute("aria-describedby", span.id); // "Angre" – what: "Avsluttes som «…» om 4 s"
    undo.addEventListener("click", () => undoPending(id));
    box.append(span, undo);
  }
  span.textContent = text;
  undo.textContent = t("undo");
}

// ------------------------------------------------------------------ actions

// A card with a request in flight: its buttons say so (aria-disabled) and do
// nothing. Not "disabled": that would take the keyboard focus off the pressed button.
const busy = new Set();
function setBusy(li, on) {
  if (on) busy.add(li.dataset.key); else busy.delete(li.dataset.key);
  li.querySelectorAll(".actions button").forEach((b) => b.setAttribute("aria-disabled", on ? "true" : "false"));
}

function onButton(li, action) {
  if (busy.has(li.dataset.key)) return;
  if (action === "resolve") { askOutcome(li); return; }
  if (action === "cancel") { schedule(li, "cancel", { reason: "false_alarm", outcome: "false_alarm" }); return; }
  send(li, action, {});
}

function askOutcome(li) {
  const a = alerts.get(li.dataset.id);
  if (!a) return;
  const dlg = $("#outcome");
  $("#outcome-what").textContent = ((a.rule_words && a.rule_words[lang]) || a.rule) + " · " + t("resident") + " " + a.resident;
  const box = $("#outcome-choices");
  box.innerHTML = "";
  for (const o of OUTCOMES) {
    if (!(o in T[lang].outcomes)) continue;
    const b = document.createElement("button");
    b.type = "button"; b.dataset.outcome = o; b.textContent = T[lang].outcomes[o];
    if (o === "helped") b.classList.add("go");
    b.addEventListener("click", () => { dlg.close(); schedule(li, "resolve", { outcome: o }); });
    box.appendChild(b);
  }
  dlg.showModal();
  box.firstElementChild.focus();
}

// A closing action waits UNDO_MS with an undo button on the card, then is sent.
function schedule(li, action, body) {
  const id = li.dataset.id;
  const p = { action, body: { ...body, expected_version: Number(li.dataset.version) }, deadline: Date.now() + UNDO_MS, li };
  p.timer = setInterval(() => {
    if (Date.now() >= p.deadline) { flushPending(id); return; }
    const el = document.querySelector(`li[data-id="${id}"]`);
    if (el) fillPending(el, id);
  }, 250);
  pending.set(id, p);
  li.querySelector(".error").textContent = "";
  render();
  const undo = li.querySelector(".pending button");
  if (undo) undo.focus();
}

function undoPending(id) {
  const p = pending.get(id);
  if (!p) return;
  clearInterval(p.timer);
  pending.delete(id);
  render();
  toast(t("undone"));
  const b = document.querySelector(`li[data-id="${id}"] .actions button`);
  if (b) b.focus();
}

async function flushPending(id, keepalive = false) {
  const p = pending.get(id);
  if (!p) return;
  clearInterval(p.timer);
  pending.delete(id);
  const li = document.querySelector(`li[data-id="${id}"]`) || p.li;
  await send(li, p.action, p.body, keepalive);
  if (p.action === "resolve") {
    const a = alerts.get(id);
    if (a && !isOpen(a)) toast(T[lang].sent_resolve(T[lang].outcomes[p.body.outcome]));
  }
}

async function send(li, action, extra, keepalive = false) {
  const id = li.dataset.id;
  const err = li.querySelector(".error");
  err.textContent = ""; err.title = "";
  setBusy(li, true);
  const body = { expected_version: Number(li.dataset.version), ...extra };
  try {
    const r = await api(`/api/alerts/${id}/${action}`, { method: "POST", body: JSON.stringify(body), keepalive });
    const j = await r.json().catch(() => ({}));
    if (r.ok) { alerts.set(id, j.alert); }
    else {
      err.textContent = errorWords(r.status, j.detail);
      err.title = typeof j.detail === "string" ? j.detail : "";
      const fresh = await api(`/api/alerts/${id}`);
      if (fresh.ok) alerts.set(id, (await fresh.json()).alert);
    }
  } catch (e) {
    if (String(e.message) !== "401") { err.textContent = errorWords(0, null); err.title = String(e); }
  }
  setBusy(li, false);
  render();
}

async function ackAll(li) {
  const cardsNow = cards().find((c) => c.group === li.dataset.key);
  if (!cardsNow) return;
  if (busy.has(li.dataset.key)) return;
  const err = li.querySelector(".error");
  err.textContent = "";
  setBusy(li, true);
  let failed = null;
  for (const a of cardsNow.alerts) {
    if (!(a.allowed_actions || []).includes("acknowledge")) continue;
    try {
      const r = await api(`/api/alerts/${a.id}/acknowledge`, { method: "POST", body: JSON.stringify({ expected_version: a.version }) });
      const j = await r.json().catch(() => ({}));
      if (r.ok) alerts.set(a.id, j.alert); else failed = failed || errorWords(r.status, j.detail);
    } catch (e) { failed = failed || errorWords(0, null); }
  }
  setBusy(li, false);
  render();
  const el = document.querySelector(`li[data-key="${li.dataset.key}"] .error`) || err;
  el.textContent = failed || "";
}

function toast(text) {
  const box = $("#toasts");
  const p = document.createElement("p");
  p.className = "toast"; p.textContent = text;
  box.appendChild(p);
  setTimeout(() => p.remove(), 4000);
}

// ------------------------------------------------------------------ timeline

// An alert reaches the console before its event is in the database (the alarm path
// does not wait for storage; under load the event follows a few seconds later), so an
// opened list is read again a few times, TIMELINE_RETRY_MS apart. A bounded number:
// every read of a resident's events is recorded in the access log.
const TIMELINE_RETRY_MS = 3000, TIMELINE_RETRIES = 3;

async function loadTimeline(li, resident, retries = TIMELINE_RETRIES) {
  clearTimeout(li.timelineTimer);
  const details = li.querySelector("details.events");
  if (retries > 0) {
    li.timelineTimer = setTimeout(() => {
      if (details && details.open && li.isConnected) loadTimeline(li, resident, retries - 1);
    }, TIMELINE_RETRY_MS);
  }
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
    tm.textContent = hhmm(e.time);
    item.appendChild(tm);
    item.append(e.words[lang]);
    ol.appendChild(item);
  }
}

// ------------------------------------------------------------------ alarm

// A red alert nobody has answered rings: a Web Audio tone every few seconds,
// a vibration, and (once per alert) a system notification through the service
// worker. It stops when every red alert is acknowledged (or closed). Browsers
// start audio only after a tap: the duty toggle, or any tap on the page.
const alarm = { ctx: null, timer: null, playing: false, beeps: 0, vibrations: 0, notified: new Set(), notifications: 0 };

function unlockAudio() {
  const AC = window.AudioContext || window.webkitAudioContext;
  if (!alarm.ctx && AC) { try { alarm.ctx = new AC(); } catch (e) { alarm.ctx = null; } }
  if (alarm.ctx && alarm.ctx.state !== "running") alarm.ctx.resume().then(soundBanner, soundBanner);
  soundBanner();
}

function ringing() {
  return [...alerts.values()].filter((a) => a.severity === "red" && isOpen(a) && !isQuiet(a) &&
    (a.state === "raised" || a.state === "notified") && !pending.has(a.id));
}

function beep() {
  const c = alarm.ctx;
  if (!c || c.state !== "running") return;
  const t0 = c.currentTime + 0.01;
  for (let i = 0; i < 4; i++) {
    const o = c.createOscillator(), g = c.createGain();
    o.type = "square";
    o.frequency.value = i % 2 ? 660 : 880;
    const s = t0 + i * 0.22;
    g.gain.setValueAtTime(0.0001, s);
    g.gain.exponentialRampToValueAtTime(0.35, s + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, s + 0.19);
    o.connect(g).connect(c.destination);
    o.start(s); o.stop(s + 0.2);
  }
  alarm.beeps++;
}

function ring() {
  if (!alarm.ctx && duty.on) unlockAudio();
  beep();
  if (navigator.vibrate) { navigator.vibrate([400, 150, 400, 150, 400]); alarm.vibrations++; }
  soundBanner();
}

function updateAlarm() {
  const r = signedIn ? ringing() : [];
  if (r.length && !alarm.playing) {
    alarm.playing = true;
    ring();
    alarm.timer = setInterval(ring, 2500);
  } else if (!r.length && alarm.playing) {
    alarm.playing = false;
    clearInterval(alarm.timer);
    if (navigator.vibrate) navigator.vibrate(0);
  }
  for (const a of r) if (!alarm.notified.has(a.id)) { alarm.notified.add(a.id); systemNotify(a); }
  // answered or closed elsewhere: take its notification away
  for (const id of [...alarm.notified]) {
    const a = alerts.get(id);
    if (!a || !r.includes(a)) { alarm.notified.delete(id); closeNotification(id); }
  }
  soundBanner();
}

function soundBanner() {
  const blocked = alarm.playing && (!alarm.ctx || alarm.ctx.state !== "running");
  $("#sound-off").hidden = !blocked;
}

async function swRegistration() {
  if (!("serviceWorker" in navigator)) return null;
  try { return (await navigator.serviceWorker.getRegistration("/console")) || null; } catch (e) { return null; }
}

async function systemNotify(a) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const rw = (a.rule_words && a.rule_words[lang]) || a.rule;
  const title = `${SEV_WORD[lang][a.severity]} ${a.code}: ${rw}`;
  const opts = { body: `${t("resident")} ${a.resident} · ${t("team")} ${a.team}`, tag: a.id, renotify: true,
    requireInteraction: true, vibrate: [400, 150, 400, 150, 400], icon: "/console/static/icon.svg", data: { id: a.id }, lang };
  alarm.notifications++;
  const reg = await swRegistration();
  try {
    if (reg) await reg.showNotification(title, opts);
    else new Notification(title, opts);
  } catch (e) { /* headless or denied: the sound and the card still alert */ }
}

async function closeNotification(id) {
  const reg = await swRegistration();
  if (!reg || !reg.getNotifications) return;
  try { for (const n of await reg.getNotifications({ tag: id })) n.close(); } catch (e) { /* gone */ }
}

// ------------------------------------------------------------------ duty

const duty = { on: localStorage.getItem("trygg.duty") === "1", lock: null, lockOk: null };

async function setDuty(on, fromTap) {
  duty.on = on;
  localStorage.setItem("trygg.duty", on ? "1" : "0");
  const b = $("#duty");
  b.setAttribute("aria-pressed", on ? "true" : "false");
  b.textContent = on ? t("duty_on") : t("duty_off");
  b.classList.toggle("on", on);
  if (fromTap && on) {
    unlockAudio();
    if ("Notification" in window && Notification.permission === "default") {
      try { await Notification.requestPermission(); } catch (e) { /* old API */ }
    }
  }
  if (on) await lockScreen(); else releaseScreen();
  dutyNote();
}

function dutyNote() {
  const el = $("#duty-note");
  el.hidden = !duty.on || !signedIn;
  if (!duty.on) return;
  let s = duty.lockOk === false ? t("duty_note_nolock") : t("duty_note");
  if (!("Notification" in window) || Notification.permission === "denied") s += t("duty_note_nonotify");
  el.textContent = s;
}

async function lockScreen() {
  if (!duty.on || duty.lock || document.visibilityState !== "visible") return;
  if (!("wakeLock" in navigator)) { duty.lockOk = false; dutyNote(); return; }
  try {
    duty.lock = await navigator.wakeLock.request("screen");
    duty.lockOk = true;
    duty.lock.addEventListener("release", () => { duty.lock = null; });
  } catch (e) { duty.lockOk = false; }
  dutyNote();
}

function releaseScreen() {
  if (duty.lock) { duty.lock.release().catch(() => null); duty.lock = null; }
}

// ------------------------------------------------------------------ channels

// The notification channels' health (GET /api/health/channels): a failing
// webhook is worth knowing on duty ("webhook feiler siden 02:13").
let channels = [];
async function loadChannels() {
  if (!signedIn) return;
  try {
    const r = await api("/api/health/channels");
    if (r.status === 404) { channels = []; renderChannels(); return false; }
    if (r.ok) channels = (await r.json()).channels || [];
  } catch (e) { /* next time */ }
  renderChannels();
  return true;
}

function renderChannels() {
  const el = $("#channels");
  const bad = channels.filter((c) => c && c.ok === false);
  el.hidden = bad.length === 0;
  // health names: "webhook:default" -> "webhook", "webhook:leader" -> "webhook leader"
  const name = (c) => String(c.name).replace(/:default$/, "").replace(":", " ");
  el.textContent = bad.map((c) => c.failing_since ? T[lang].channel_failing(name(c), dayTime(c.failing_since))
    : T[lang].channel_failing_n(name(c), c.consecutive_failures || 0)).join(" · ");
}

// ------------------------------------------------------------------ live

// New alerts are said through the live region (#announce, assertive). A flood is
// one sentence ("24 nye alarmer"), not one per alert, but the first red alarm in
// it is said by name at once, and up to three red ones by name in that sentence:
// offline sensors must never hide a fall from a screen-reader user.
const announcing = { until: 0, n: 0, reds: [], redSaid: false, timer: null };
const alertWords = (a) => `${SEV_WORD[lang][a.severity]} ${(a.rule_words && a.rule_words[lang]) || a.rule}, ${t("resident")} ${a.resident}`;

function say(text) {
  const el = $("#announce");
  // the same words again are no change a screen reader hears: vary them unseen
  el.textContent = text === el.textContent ? text + "\u00a0" : text;
}

function announce(a) {
  const now = Date.now();
  const red = a.severity === "red";
  if (now >= announcing.until) {
    say(`${t("new_alert")}: ${alertWords(a)}`);
    Object.assign(announcing, { until: now + 1500, n: 1, reds: red ? [a] : [], redSaid: red });
    clearTimeout(announcing.timer);
    announcing.timer = setTimeout(summarise, 1500);
    return;
  }
  announcing.n++;
  if (red) {
    announcing.reds.push(a);
    if (!announcing.redSaid) { announcing.redSaid = true; say(`${t("new_alert")}: ${alertWords(a)}`); }
  }
}

function summarise() {
  const { n, reds } = announcing;
  if (n > 1) {
    if (reds.length > 3) say(T[lang].reds(n, reds.length));
    else if (reds.length) say(T[lang].among(n, reds.map(alertWords).join("; ")));
    else say(T[lang].new_alerts(n));
  }
  announcing.n = 0; announcing.reds = [];
}

let loadedOnce = false;
async function loadOpen() {
  const r = await api("/api/alerts?state=open&limit=1000");
  if (!r.ok) return;
  const j = await r.json();
  const known = new Set(alerts.keys());
  alerts.clear();
  for (const a of j.alerts) alerts.set(a.id, a);
  render();
  // after a gap in the feed, the alerts raised meanwhile are new to this user too
  if (loadedOnce) for (const a of j.alerts) if (!known.has(a.id) && !isQuiet(a)) announce(a);
  loadedOnce = true;
}

async function stream() {
  // Read with fetch (not EventSource) to see a 401 and to reconnect with backoff;
  // the stream ends with `event: revoked` when the session is revoked or expires.
  let delay = 1000;
  while (signedIn) {
    streamAbort = new AbortController();
    try {
      const r = await fetch("/api/stream", { signal: streamAbort.signal });
      if (r.status === 401) { logout(ended(), false); return; }
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
          const lines = chunk.split("\n");
          const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          // The server ends the stream with `revoked` when the session is revoked or
          // has expired: go to sign-in at once, without a reconnect that only gets 401.
          if (lines.includes("event: revoked")) { streamAbort.abort(); logout(ended(), false); return; }
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
  // closed by someone else (or by trygg) while our closing action waited: drop ours
  if (!isOpen(a) && pending.has(a.id)) { clearInterval(pending.get(a.id).timer); pending.delete(a.id); }
  render();
  if (!known && isOpen(a) && !isQuiet(a)) {
    const li = $(`#alerts li[data-id="${a.id}"]`);
    if (li) li.classList.add("new");
    announce(a);
  }
}

let signInConfig = null;
async function showLogin() {
  $("#login").hidden = false;
  if (!signInConfig) {
    const r = await fetch("/auth/config").catch(() => null);
    signInConfig = r && r.ok ? await r.json() : { oidc: false };
  }
  $("#oidc").hidden = !signInConfig.oidc;
  $("#or-token").hidden = !signInConfig.oidc;
}

let channelTimer = null;
async function start() {
  const tok = tokenFromAddress();
  if (tok && !(await signInWithToken(tok))) { showLogin(); return; }
  const r = await fetch("/api/me").catch(() => null);
  if (!r || r.status === 401) { showLogin(); return; }
  if (!r.ok) { $("#login-error").textContent = errorWords(r.status); showLogin(); return; }
  me = await r.json();
  signedIn = true;
  $("#who").textContent = me.name + (me.teams.length ? " · " + me.teams.join(", ") : "");
  showDistrict();
  $("#login").hidden = true; $("#board").hidden = false; $("#logout").hidden = false; $("#duty").hidden = false;
  $("#phones").hidden = !(me.role === "team_leader" || me.role === "admin");
  dutyNote();
  await loadOpen();
  stream();
  if (await loadChannels() && !channelTimer) channelTimer = setInterval(loadChannels, 30000);
}

// ------------------------------------------------------------------ phones

// A team leader (or an admin) enrols a phone: a one-time link and its QR code,
// and revokes sign-ins (POST /api/enrolments, /api/sessions/{id}/revoke).
async function loadSessions() {
  const r = await api("/api/sessions").catch(() => null);
  if (!r || !r.ok) return;
  const list = $("#sessions");
  list.replaceChildren();
  const rows = (await r.json()).sessions;
  $("#no-sessions").hidden = rows.length > 0;
  for (const s of rows) {
    const li = document.createElement("li");
    li.dataset.id = s.id; li.dataset.user = s.user;
    const p = document.createElement("span");
    p.textContent = [s.user, T[lang].kind[s.kind] || s.kind, s.label, T[lang].until(dayTime(s.expires_at))]
      .filter(Boolean).join(" · ") + (s.current ? ` (${t("this_device")})` : "");
    li.append(p);
    if (!s.current) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "small"; b.dataset.action = "revoke";
      b.textContent = t("revoke");
      b.setAttribute("aria-label", `${t("revoke")}: ${s.user}, ${s.label}`);
      b.addEventListener("click", async () => {
        b.setAttribute("aria-disabled", "true");
        const rr = await api(`/api/sessions/${s.id}/revoke`, { method: "POST" }).catch(() => null);
        if (rr && rr.ok) { toast(T[lang].revoked_ok(s.user)); loadSessions(); }
        else { b.removeAttribute("aria-disabled"); toast(errorWords(rr ? rr.status : 0)); }
      });
      li.append(b);
    }
    list.append(li);
  }
}

$("#phones-box").addEventListener("toggle", () => { if ($("#phones-box").open) loadSessions(); });
$("#enrol").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { user: $("#enrol-user").value.trim() };
  const team = $("#enrol-team").value.trim();
  if (team) body.team = team;
  $("#enrol-error").textContent = "";
  const r = await api("/api/enrolments", { method: "POST", body: JSON.stringify(body) }).catch(() => null);
  if (!r || !r.ok) {
    const j = r ? await r.json().catch(() => ({})) : {};
    $("#enrol-error").textContent = j.detail || errorWords(r ? r.status : 0);
    return;
  }
  const en = (await r.json()).enrolment;
  $("#enrol-qr").innerHTML = en.qr_svg; // trygg's own SVG (segno), not user input
  const svg = $("#enrol-qr svg");
  if (svg) { svg.setAttribute("role", "img"); svg.setAttribute("aria-label", `QR: ${en.user}`); }
  $("#enrol-link").textContent = en.link;
  $("#enrol-valid").textContent = T[lang].enrol_valid(dayTime(en.expires_at));
  $("#enrol-out").hidden = false;
  loadSessions();
});

// ------------------------------------------------------------------ wiring

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const tok = $("#token").value.trim();
  $("#token").value = "";
  if (await signInWithToken(tok)) start();
});
$("#logout").addEventListener("click", () => logout(""));
$("#lang").addEventListener("click", () => {
  lang = lang === "nb" ? "en" : "nb";
  localStorage.setItem("trygg.lang", lang);
  applyLang();
});
$("#duty").addEventListener("click", () => setDuty(!duty.on, true));
$("#sound-off").addEventListener("click", unlockAudio);
// The outcome dialog keeps Tab inside (showModal makes the page inert, but Tab
// would still leave for the browser's own bar); Escape closes it natively and
// focus goes back to the card's Avslutt button.
$("#outcome").addEventListener("keydown", (e) => {
  if (e.key !== "Tab") return;
  const all = [...$("#outcome").querySelectorAll("button:not([disabled])")];
  if (!all.length) return;
  const first = all[0], last = all[all.length - 1];
  if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
  else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
});
// Any tap or key may start audio (browsers allow it only after one).
document.addEventListener("pointerdown", () => { if (alarm.playing || duty.on) unlockAudio(); }, { capture: true });
document.addEventListener("keydown", () => { if (alarm.playing || duty.on) unlockAudio(); }, { capture: true });
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") lockScreen(); });
// Leaving the page sends what waits for its undo time (it was meant).
window.addEventListener("pagehide", () => { for (const id of [...pending.keys()]) flushPending(id, true); });
setInterval(() => {
  document.querySelectorAll(".alerts > li").forEach((li) => {
    if (!li.dataset.since) return;
    const el = li.querySelector(".elapsed"), v = elapsed(li.dataset.since);
    el.textContent = v;
    el.setAttribute("aria-label", v + " " + t("ago"));
  });
}, 1000);
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/console/sw.js", { scope: "/console" }).catch(() => null);
}
// For tests and support: what the alarm is doing.
window.trygg = {
  alarm: () => ({ playing: alarm.playing, beeps: alarm.beeps, vibrations: alarm.vibrations,
    notifications: alarm.notifications, audio: alarm.ctx ? alarm.ctx.state : null }),
  duty: () => ({ on: duty.on, wakeLock: !!duty.lock }),
  errorWords, UNDO_MS,
};
applyLang();
start();
