// The SecureConnect web client. Encryption happens in secure.js; this file is the interface.
import { Api, ApiError, EventStream } from "./api.js";
import { display } from "./crypto/safety.js";
import { IdentityChangedError, MessageTooLong, SecureClient, charsOver } from "./secure.js";
import * as store from "./store.js";
import { explain, lang, setLang, t } from "./i18n.js";
import { Call, callsSupported } from "./call.js";
import { fetchPack } from "./suggest.js";
import { DELETE, EDIT, EVENTS, REACTION, fold, isAttachment, isText, pointerOf } from "./timeline.js";
import * as AT from "./attachments.js";
import { SearchIndex, matches } from "./search.js";

const root = document.getElementById("app");
const ui = {
  api: new Api(), secure: null, stream: null, session: null, conversations: [],
  open: null, messages: new Map(), receipts: [], typing: new Map(), status: "offline",
  showNew: false, banner: null,
  call: null, ringing: new Map(), callError: "",
  search: null, query: "", draft: { people: "", name: "", error: "" },
  compose: null,  // {mode: "reply" | "edit", seq, sender, text} while replying or editing
  upload: null,  // {name, pct} while a file is being encrypted and sent
  limits: null,  // the server's attachment limits (GET /v1/blobs), once asked
  recorder: null,  // {media, started, timer} while a voice note is being recorded
  profiles: new Map(),  // username -> {display_name, avatar}: people one shares a conversation with
  duplicatesDropped: 0,  // events sent again (after a server crash) that this device had
  prefs: { theme: "system", notify: false, notifyText: true, muted: [] },
  suggest: { pack: null, unavailable: false, settings: { device: true, off: [] },
    counts: { shown: 0, taken: [], load_failures: 0 }, shownFor: new Set() },
};

// ----- tiny DOM helpers (text only: nothing a user types is ever parsed as HTML) -------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v;  // CSSOM: the page's CSP allows no style attribute
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) {
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Line icons (Feather's shapes), drawn as SVG: an icon must not depend on an emoji font.
const ICONS = {
  attach: ["M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48"],
  mic: ["M12 1a3 3 0 0 0-3 3v8a3 3 0 0 0 6 0V4a3 3 0 0 0-3-3z", "M19 10v2a7 7 0 0 1-14 0v-2", "M12 19v4", "M8 23h8"],
  stop: ["M6 6h12v12H6z"],
};
function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  for (const [k, v] of Object.entries({ viewBox: "0 0 24 24", width: "20", height: "20", fill: "none", stroke: "currentColor",
    "stroke-width": "2", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true" })) svg.setAttribute(k, v);
  for (const d of ICONS[name]) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

function colour(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h} 55% 48%)`;
}

// A picture when there is one, else up to two initials on a colour of the (unique) username:
// two people with the same first letter no longer look alike.
function initials(label) {
  const words = label.trim().split(/[\s._-]+/u).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[1]].map((w) => [...w][0]) : [...(words[0] || "?")].slice(0, 2);
  return letters.join("").toUpperCase();
}
function avatar(label, key = label, picture = null) {
  const node = el("span", { class: "avatar", style: `background:${colour(key)}`, "aria-hidden": "true" }, initials(label));
  if (picture) {
    pictureUrl(picture).then((url) => { if (url) node.replaceChildren(el("img", { src: url, alt: "" })); }, () => {});
  }
  return node;
}
const personAvatar = (username) => {
  const p = ui.profiles.get(username);
  return avatar(displayName(username), username, p && p.avatar ? { kind: "user", id: username, tag: p.avatar } : null);
};
function convAvatar(conv) {
  if (conv.kind === "direct" && !conv.name) {
    const other = conv.members.find((m) => m !== ui.session.username);
    if (other) return personAvatar(other);
  }
  return avatar(title(conv), conv.id, conv.avatar ? { kind: "group", id: conv.id, tag: conv.avatar } : null);
}
// Pictures are fetched with the session's token (an <img> cannot send it) and kept per tag.
const pictures = new Map();
function pictureUrl({ kind, id, tag }) {
  const key = `${kind}|${id}|${tag}`;
  if (!pictures.has(key)) {
    const path = kind === "user" ? `/v1/users/${encodeURIComponent(id)}/avatar?size=64` : `/v1/conversations/${id}/avatar?size=64`;
    pictures.set(key, ui.api.raw("GET", path).then((bytes) => URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" })), () => null));
  }
  return pictures.get(key);
}
// What people chose to be called; their username where they did not.
function displayName(username) {
  const p = ui.profiles.get(username);
  return (p && p.display_name) || username;
}
const time = (ms) => new Date(ms).toLocaleTimeString(lang(), { hour: "2-digit", minute: "2-digit" });
const dayOf = (ms) => new Date(ms).toDateString();
function dayLabel(ms) {
  const today = new Date();
  if (dayOf(ms) === today.toDateString()) return t("today");
  if (dayOf(ms) === new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1).toDateString()) return t("yesterday");
  return new Date(ms).toLocaleDateString(lang(), { weekday: "short", day: "numeric", month: "short", year: "numeric" });
}
// The conversation list's time: the hour today, the weekday this week, else the date.
function when(ms) {
  const days = (Date.now() - ms) / 86400000;
  if (dayOf(ms) === new Date().toDateString()) return time(ms);
  if (days < 6) return new Date(ms).toLocaleDateString(lang(), { weekday: "short" });
  return new Date(ms).toLocaleDateString(lang(), { day: "numeric", month: "short" });
}

// Text with its web addresses as links: only http and https, opened in a new tab without
// giving that page a handle on this one (rel=noopener noreferrer). Never javascript: or data:.
const LINK = /\bhttps?:\/\/[^\s<>"']+/gi;
function linkify(text) {
  const out = [];
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    let href = match[0].replace(/[.,;:!?)\]]+$/, "");
    let url;
    try { url = new URL(href); } catch { continue; }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    out.push(text.slice(at, match.index));
    out.push(el("a", { href: url.href, target: "_blank", rel: "noopener noreferrer", title: t("openLink") }, href));
    at = match.index + href.length;
  }
  out.push(text.slice(at));
  return out;
}

function title(conv) {
  if (conv.name) return conv.name;
  const others = conv.members.filter((m) => m !== ui.session.username);
  return others.map(displayName).join(", ") || displayName(ui.session.username);
}

// ----- start-up and authentication ----------------------------------------------------------

async function boot() {
  setLang(lang());
  // The appearance is also kept synchronously (as the language is): the page never flashes the
  // other theme while the stored settings load, and a reload right after a change keeps it.
  const theme = localStorage.getItem("sc-theme");
  if (theme) { ui.prefs.theme = theme; applyTheme(); }
  ui.prefs = { ...ui.prefs, ...((await store.load("ui-settings")) || {}) };
  if (theme) ui.prefs.theme = theme;
  applyTheme();
  ui.session = await store.load("session");
  if (ui.session) {
    ui.api.token = ui.session.token;
    try {
      await enter();
      return;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) console.warn(error);
      await store.remove("session");
      ui.session = null;
    }
  }
  renderAuth();
}

function renderAuth(message = "") {
  const username = el("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  // Shown once the server says this account has two-step verification on.
  const code = el("input", { id: "totp-code", name: "totp-code", autocomplete: "one-time-code", inputmode: "numeric", "aria-label": t("totpCode") });
  const codeRow = el("div", { hidden: true }, el("label", { for: "totp-code" }, t("totpCode")), code);
  const error = el("div", { class: "error", role: "alert" }, message);
  async function go(register) {
    error.textContent = t("working");
    try {
      if (register) await ui.api.register(username.value, password.value);
      const previous = await store.load(`device-id:${username.value.trim().toLowerCase()}`);
      const device = navigator.userAgent.includes("Mobile") ? "phone browser" : "web browser";
      let login;
      try {
        login = await ui.api.login(username.value, password.value, device, previous || null, code.value.trim());
      } catch (e) {
        if (e.code !== "device_not_found") throw e;
        login = await ui.api.login(username.value, password.value, device, null, code.value.trim());
      }
      ui.session = { token: login.token, username: login.username, device_id: login.device_id, cursors: {} };
      await store.save(`device-id:${login.username}`, login.device_id);
      await store.save("session", ui.session);
      if (login.must_change_password) renderMustChange();
      else await enter();
    } catch (e) {
      if (e.code === "login_throttled") waitOut(e.retryAfter);
      else if (e.code === "totp_required" || e.code === "invalid_totp_code") {
        codeRow.hidden = false;
        code.value = "";
        error.textContent = e.code === "totp_required" ? t("totpPrompt") : t("totpWrong");
        code.focus();
      } else error.textContent = explain(e);
    }
  }
  // Too many failed logins: the buttons rest until the server's wait is over, counting down.
  function waitOut(seconds) {
    const buttons = form.querySelectorAll("#login");
    const until = Date.now() + Math.max(1, seconds) * 1000;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      buttons.forEach((b) => { b.disabled = left > 0; });
      error.textContent = left > 0 ? t("loginThrottled", { s: left }) : "";
      if (left > 0) setTimeout(tick, 1000);
    };
    tick();
  }
  const form = el("form", { class: "auth", onsubmit: (e) => { e.preventDefault(); go(false); } },
    el("h1", {}, "SecureConnect"), el("p", { class: "tag" }, t("tagline")),
    el("label", { for: "username" }, t("username")), username,
    el("label", { for: "password" }, t("password")), password, codeRow,
    el("div", { class: "row" },
      el("button", { type: "submit", id: "login" }, t("login")),
      el("button", { type: "button", class: "ghost", id: "register", onclick: () => go(true) }, t("register"))),
    error, languagePicker());
  root.replaceChildren(form);
  username.focus();
}

function languagePicker() {
  return el("select", { "aria-label": t("language"), id: "language", onchange: (e) => { setLang(e.target.value); render(); } },
    el("option", { value: "en", selected: lang() === "en" }, "English"),
    el("option", { value: "vi", selected: lang() === "vi" }, "Tiếng Việt"));
}

async function enter() {
  ui.secure = new SecureClient(ui.api);
  ui.secure.onCallKey = (senderId, deviceId, payload) => { if (ui.call) ui.call.onKey(senderId, deviceId, payload); };
  await ui.secure.start();
  ui.search = await new SearchIndex(ui.session.username).load();
  ui.secure.onRemember = indexMessage;
  // The index is kept in IndexedDB; built from the device's messages only the first time (a
  // device that read messages before search existed).
  if (!ui.search.index.size) for (const c of Object.keys(ui.secure.state.messages || {})) for (const m of ui.secure.known(c)) indexMessage(m);
  await refreshConversations();
  render();
  ui.stream = new EventStream(location.origin, ui.session.token, ui.session.cursors || {}, onEvent, onStatus).start();
  ui.api.socket = ui.stream;
  loadSuggestions();
}

function onStatus(status, code) {
  ui.status = status;
  if (code === 4401) { logout(false); return; }
  if (status === "online") {
    refreshConversations().then(render, quiet);
    refreshReceipts().catch(quiet);
    catchUpOnCalls({ late: true }).catch(quiet);
  }
  renderStatus();
}

// ----- live events --------------------------------------------------------------------------

async function onEvent(event) {
  if (event.type === "message") {
    // After a server crash the server may resume from acks it had not yet written and send a
    // few events again: this device has them (by sequence number), so nobody sees one twice.
    if (ui.secure.has(event.conversation_id, event.seq) || (ui.messages.get(event.conversation_id) || new Map()).has(event.seq)) {
      ui.duplicatesDropped++;
      return;
    }
    const plain = await ui.secure.decrypt(event);
    if (plain.membership && ["profile", "avatar"].includes(plain.membership.action)) {
      await refreshProfiles([plain.membership.actor]).catch(quiet);
      render();  // their name and picture, everywhere they are shown
    }
    addMessage(plain);
    ui.session.cursors = { ...ui.stream.cursors };
    await store.save("session", ui.session);
    if (ui.open === event.conversation_id && document.visibilityState === "visible") markRead();
    else notify(plain);
    scheduleRefresh();
  } else if (event.type === "inbox") {
    for (const plain of await ui.secure.handleInbox(event)) addMessage(plain);
  } else if (event.type === "receipts") {
    // One frame per conversation lists everyone whose marks moved over our messages (or our
    // own mark, read on another of our devices).
    if (event.conversation_id === ui.open) {
      const moved = new Map(event.receipts.map((r) => [r.user_id, r]));
      ui.receipts = ui.receipts.filter((r) => !moved.has(r.user_id)).concat([...moved.values()]);
      renderMessages();
    }
    if (event.receipts.some((r) => r.username === ui.session.username)) scheduleRefresh();
  } else if (event.type === "typing") {
    ui.typing.set(`${event.conversation_id}|${event.username}`, event.typing ? Date.now() + 6000 : 0);
    renderTyping();
  } else if (event.type === "prekeys_low") {
    await ui.secure.topUpPrekeys();
  } else if (event.type === "call") {
    onCall(event.call);
  } else if (event.type === "ready" && ui.call && ui.call.inCall) {
    // Back online: a call change announced while the stream was down (the replica hosting
    // the call shut down, say) was not heard, so it is asked for.
    ui.call.refresh().catch(quiet);
  }
}

// ----- calls --------------------------------------------------------------------------------

const firstHeard = new Map();  // call id -> when this device first heard it ring (its own clock)
const lastVersion = new Map();  // call id -> the newest version seen: a late event is ignored
function onCall(call, late = false) {
  if (call.version <= (lastVersion.get(call.id) ?? -1)) return;
  lastVersion.set(call.id, call.version);
  const mine = call.participants.some((p) => p.device_id === ui.session.device_id);
  // A call already live when this device first hears of it (it was away) shows, but does not
  // ring as if it had just started.
  if (!firstHeard.has(call.id)) firstHeard.set(call.id, late && call.state !== "ringing" ? 0 : Date.now());
  // A group call keeps ringing for those who have not answered, as Signal's and Element's do.
  const ringWindow = call.rings_until ? call.rings_until - call.created_at : 0;
  const stillRinging = call.state === "ringing"
    || (call.state === "live" && Date.now() - firstHeard.get(call.id) < ringWindow);
  const rings = stillRinging && !mine && call.caller !== ui.session.username
    && !call.declined.includes(ui.session.username)
    && !(ui.call && ui.call.inCall);
  if (rings) {
    if (!ui.ringing.has(call.id)) {
      notify({ sender: call.caller, conversation_id: call.conversation_id },
        t(call.media === "audio" ? "incomingVoice" : "incomingVideo", { caller: call.caller }));
    }
    ui.ringing.set(call.id, call);
    const left = ringWindow - (Date.now() - firstHeard.get(call.id));
    setTimeout(() => { if (ui.ringing.delete(call.id)) renderCall(); }, Math.max(0, left));
  } else ui.ringing.delete(call.id);
  if (ui.call && ui.call.id === call.id) ui.call.update(call).catch((e) => quiet(e));
  ui.live = ui.live || new Map();
  const wasLive = ui.live.has(call.conversation_id);
  if (call.state === "ended") ui.live.delete(call.conversation_id); else ui.live.set(call.conversation_id, call);
  renderCall();
  if (!ui.conversations.some((c) => c.id === call.conversation_id)) scheduleRefresh();
  if (call.conversation_id === ui.open) render();  // the list's "call" tag with it
  else if (wasLive !== ui.live.has(call.conversation_id)) renderSidebar();
}

async function startCall(conv, media) {
  ui.callError = "";
  if (!callsSupported()) { ui.callError = t("noE2eeBrowser"); renderCall(); return; }
  try {
    const call = await ui.api.startCall(conv.id, media);
    // Calling from a message request answers it, as a reply does: its panel goes.
    if (conv.request) refreshConversations().then(render).catch(quiet);
    await joinCall(call);
  } catch (error) {
    ui.callError = error.code === "calls_unavailable" ? t("callsUnavailable") : explain(error);
    renderCall();
  }
}

async function joinCall(call, options = {}) {
  ui.ringing.delete(call.id);
  if (!callsSupported()) { ui.callError = t("noE2eeBrowser"); renderCall(); return; }
  if (ui.call && ui.call.inCall) await ui.call.leave();
  ui.call = new Call({ api: ui.api, secure: ui.secure, me: ui.session, onChange: renderCall,
    relayOnly: localStorage.getItem("sc-relay-only") === "1" });
  try {
    await ui.call.join(call, options);
  } catch (error) {
    ui.call.stop("failed");
    ui.callError = error.code === "calls_unavailable" ? t("callsUnavailable") : explain(error);
  }
  renderCall();
}

const videos = new Map();  // the <video> of each tile, kept across redraws (no flicker, no restart)
function videoFor(key, stream, muted) {
  let node = videos.get(key);
  if (!node) {
    node = el("video", { autoplay: true, playsinline: true });
    node.muted = muted;
    // Someone else's first picture on screen: where a join is done for the person joining (the
    // "first picture" step of the call diagnostics, which bench/calls.py times joins by).
    if (!muted && node.requestVideoFrameCallback) {
      node.requestVideoFrameCallback(() => { if (ui.call) ui.call.step("first picture"); });
    }
    videos.set(key, node);
  }
  if (node.srcObject !== stream) node.srcObject = stream;
  return node;
}

let shownCall = "";
function renderCall() {
  let layer = document.getElementById("call-layer");
  if (!layer) { layer = el("div", { id: "call-layer" }); document.body.append(layer); }
  // Redraw only when something a person would see changed: buttons stay put under the pointer.
  const c0 = ui.call;
  const seen = JSON.stringify([ui.callError, [...ui.ringing.keys()], lang(), c0 && c0.inCall && [c0.state,
    c0.waitingForKeys(), [...c0.tiles.keys()], [...c0.speaking], c0.others().map((p) => [p.device_id, p.audio, p.video, p.screen]),
    c0.local && c0.local.getTracks().map((tr) => tr.enabled)]]);
  if (seen === shownCall) return;
  shownCall = seen;
  const parts = [];
  if (ui.callError) {
    parts.push(el("div", { class: "call-error", role: "alert", id: "call-error" }, ui.callError,
      el("button", { class: "ghost", onclick: () => { ui.callError = ""; renderCall(); } }, t("close"))));
  }
  for (const call of ui.ringing.values()) {
    const conv = ui.conversations.find((c) => c.id === call.conversation_id);
    parts.push(el("div", { class: "incoming", role: "alertdialog", id: "incoming-call", "data-call": call.id },
      avatar(call.caller),
      el("div", { class: "who" }, t(call.media === "audio" ? "incomingVoice" : "incomingVideo", { caller: call.caller }),
        conv && conv.kind === "group" ? el("div", { class: "sub" }, title(conv)) : null),
      el("button", { class: "decline", id: "decline-call", onclick: async () => {
        ui.ringing.delete(call.id); renderCall(); await ui.api.callStep(call.id, "decline").catch(quiet); } }, t("decline")),
      call.media === "video" ? el("button", { class: "ghost", id: "accept-audio",
        onclick: () => joinCall(call, { camera: false }) }, t("acceptAudio")) : null,
      el("button", { class: "accept", id: "accept-call", onclick: () => joinCall(call) }, t("acceptCall"))));
  }
  const c = ui.call;
  if (c && c.inCall) {
    const others = c.others();
    const waiting = c.waitingForKeys();
    const tiles = [el("div", { class: "tile me" }, videoFor("me", c.local, true),
      el("span", { class: "label" }, `${ui.session.username} (${t("you")})`))];
    for (const p of others) {
      const tile = [...c.tiles.values()].find((x) => x.device_id === p.device_id);
      tiles.push(el("div", { class: `tile${tile && c.speaking.has(tile.feed_id) ? " speaking" : ""}`, "data-user": p.username },
        tile ? videoFor(tile.feed_id, tile.stream, false) : el("div", { class: "placeholder" }, avatar(p.username)),
        el("span", { class: "label" }, p.username, p.audio ? "" : ` · ${t("muted")}`, p.video ? "" : ` · ${t("cameraIsOff")}`,
          p.screen ? ` · ${t("sharingScreen")}` : "")));
    }
    for (const key of [...videos.keys()]) {
      if (key !== "me" && ![...c.tiles.keys()].includes(key)) videos.delete(key);
    }
    const mic = c.local && c.local.getAudioTracks().some((tr) => tr.enabled);
    const cam = c.local && c.local.getVideoTracks().some((tr) => tr.enabled);
    parts.push(el("div", { class: "call-screen", id: "call-screen", "data-state": c.state },
      el("div", { class: `e2ee${waiting ? " waiting" : ""}`, id: "call-e2ee" },
        c.state === "reconnecting" ? t("reconnecting") : waiting ? t("waitingKeys") : t("e2eeOn")),
      el("div", { class: `grid n${Math.min(tiles.length, 9)}` }, tiles),
      el("div", { class: "controls" },
        el("button", { id: "toggle-mic", "aria-pressed": String(!mic), onclick: () => c.setAudio(!mic).catch(quiet) }, mic ? t("muteMic") : t("unmuteMic")),
        c.local && c.local.getVideoTracks().length ? el("button", { id: "toggle-camera", "aria-pressed": String(!cam),
          onclick: () => c.setVideo(!cam).catch(quiet) }, cam ? t("cameraOff") : t("cameraOn")) : null,
        navigator.mediaDevices.getDisplayMedia ? el("button", { id: "share-screen", class: "ghost",
          onclick: () => c.shareScreen().catch(quiet) }, t("shareScreen")) : null,
        el("button", { id: "pick-device", class: "ghost", onclick: () => pickDevice(c) }, t("devices")),
        el("button", { id: "leave-call", class: "leave", onclick: async () => { await c.leave(); renderCall(); } }, t("leaveCall")))));
  }
  layer.replaceChildren(...parts);
}

async function pickDevice(c) {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const select = (kind, label) => el("label", {}, label, el("select", { "data-kind": kind,
    onchange: (e) => c.useDevice(kind === "audioinput" ? "audio" : "video", e.target.value).catch(quiet) },
  devices.filter((d) => d.kind === kind).map((d, i) => el("option", { value: d.deviceId }, d.label || `${label} ${i + 1}`))));
  const dialog = el("dialog", { id: "device-dialog" }, el("h2", {}, t("devices")),
    select("audioinput", t("microphone")), select("videoinput", t("camera")),
    el("div", { class: "row" }, el("button", { onclick: () => dialog.close() }, t("close"))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

function addMessage(plain) {
  ui.typing.delete(`${plain.conversation_id}|${plain.sender}`);  // their message ends "typing"
  renderTyping();
  // Kept even before the conversation's history has loaded: that load merges into this map,
  // so a message sent (or received) meanwhile does not vanish when the history arrives.
  if (!ui.messages.has(plain.conversation_id)) ui.messages.set(plain.conversation_id, new Map());
  ui.messages.get(plain.conversation_id).set(plain.seq, plain);
  if (plain.conversation_id === ui.open) renderMessages();
}

let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refreshConversations().then(renderSidebar, quiet), 250);
}

// Background refreshes fail quietly while the server is away; the next event retries them.
function quiet(error) {
  console.warn("background refresh failed:", error.message);
}

async function refreshConversations() {
  ui.conversations = await ui.api.conversations();
  const known = new Set([ui.session.username, ...ui.conversations.flatMap((c) => c.members)]);
  const missing = [...known].filter((u) => !ui.profiles.has(u));
  if (missing.length) await refreshProfiles(missing);
}

async function refreshProfiles(usernames) {
  for (let i = 0; i < usernames.length; i += 256) {
    const found = await ui.api.profiles(usernames.slice(i, i + 256));
    for (const u of usernames.slice(i, i + 256)) if (!ui.profiles.has(u)) ui.profiles.set(u, { display_name: null, avatar: null });
    for (const p of found) ui.profiles.set(p.username, { display_name: p.display_name, avatar: p.avatar });
  }
}

// ----- actions ------------------------------------------------------------------------------

async function openConversation(id) {
  ui.open = id;
  ui.receipts = [];
  ui.compose = null;
  ui.banner = null;
  render();
  document.getElementById("composer")?.focus();  // type straight away; history fills in
  let history;
  try {
    history = await ui.secure.history(id);
  } catch (error) {
    quiet(error);  // the server is away: what this device kept of the conversation
    history = ui.secure.known(id);
  }
  const shown = ui.messages.get(id) || new Map();
  for (const m of history) if (!shown.has(m.seq)) shown.set(m.seq, m);
  ui.messages.set(id, shown);
  try {
    await refreshReceipts();  // draws the messages with their marks
  } catch (error) {
    quiet(error);  // the server is away: the messages without marks, for now
    renderMessages();
  }
  if (ui.open === id) markRead();
}

// The open conversation's marks ("Delivered", "Read"): read when it opens, and again when the
// event stream comes back (marks that moved while away were not heard). While the server is
// away the last ones known stay; a conversation opened in the meantime is not given another's.
async function refreshReceipts() {
  const id = ui.open;
  if (!id) return;
  const marks = await ui.api.receipts(id);
  if (ui.open !== id) return;
  ui.receipts = marks;
  renderMessages();
}

async function markRead() {
  const conv = ui.conversations.find((c) => c.id === ui.open);
  if (conv && conv.request) return;  // the asker learns nothing until it is accepted
  const seqs = [...(ui.messages.get(ui.open) || new Map()).keys()];
  const last = seqs.length ? Math.max(...seqs) : 0;
  if (conv && last > conv.read_seq) {
    await ui.api.mark(ui.open, last).catch(() => {});
    scheduleRefresh();
  }
}

async function send(text, replyTo = null) {
  const id = ui.open;
  try {
    const plain = await ui.secure.send(id, text, replyTo);
    addMessage(plain);
    for (const n of ui.secure.notices.splice(0)) {
      ui.banner = n.change === "own_new_device"
        ? { kind: "own", text: t("ownNewDevice"), username: null }
        : { kind: "notice", text: t("newDevice", { name: n.username }), username: n.username };
    }
    renderBanner();
    if (ui.conversations.find((c) => c.id === id && c.request)) {
      // Replying accepted the request: it is an ordinary conversation now, read marks included.
      await refreshConversations();
      render();
      renderMessages();
      await markRead();
    } else {
      scheduleRefresh();
    }
    return true;
  } catch (error) {
    if (error instanceof IdentityChangedError) {
      ui.banner = { kind: "changed", text: t("keyChanged", { name: error.username }), username: error.username };
      renderBanner();
      return false;
    }
    throw error;
  }
}

let typingSent = 0;
function typing() {
  if (Date.now() - typingSent > 3000) {
    typingSent = Date.now();
    ui.api.typing(ui.open, true).catch(() => {});
  }
}

async function startConversation(people, name) {
  const names = people.split(",").map((s) => s.trim()).filter(Boolean);
  const conv = names.length === 1 && !name ? await ui.api.direct(names[0]) : await ui.api.group(names, name || null);
  ui.showNew = false;
  await refreshConversations();
  await openConversation(conv.id);
}

async function logout(ask = true) {
  let wipe = false;
  if (ask) {
    const choice = await confirmLogout();
    if (choice === null) return;
    wipe = choice;
  }
  ui.stream?.close();
  ui.api.socket = null;
  await ui.api.logout().catch(() => {});
  if (wipe) await store.wipe();
  else await store.remove("session");
  Object.assign(ui, { secure: null, session: null, open: null, messages: new Map(), conversations: [] });
  renderAuth();
}

function confirmLogout() {
  return new Promise((resolve) => {
    const wipe = el("input", { type: "checkbox", id: "wipe", style: "width:auto" });
    const dialog = el("dialog", {},
      el("p", {}, el("label", {}, wipe, " ", t("wipe"))),
      el("div", { class: "row" },
        el("button", { class: "ghost", onclick: () => { dialog.close(); resolve(null); } }, t("cancel")),
        el("button", { id: "confirm-logout", onclick: () => { dialog.close(); resolve(wipe.checked); } }, t("logoutConfirm"))));
    document.body.append(dialog);
    dialog.showModal();
  });
}

// Two-step verification: turn on with a QR code and a first code (then the recovery codes,
// shown this once), or off with the password and a code.
async function showSecurity() {
  const body = el("div", { id: "security-body" });
  const dialog = el("dialog", { id: "security-dialog" }, devicesForm(), el("h2", {}, t("totpTitle")), body,
    passwordForm(), emailForm(),
    el("div", { class: "row" }, el("button", { class: "ghost", id: "security-close", onclick: () => dialog.close() }, t("close"))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  const error = () => el("div", { class: "error", role: "alert", id: "security-error" });
  async function show() {
    const status = await ui.api.totpStatus();
    if (status.enabled) {
      const password = el("input", { type: "password", id: "totp-off-password", autocomplete: "current-password", "aria-label": t("password"), placeholder: t("password") });
      const code = el("input", { id: "totp-off-code", autocomplete: "one-time-code", "aria-label": t("totpCode"), placeholder: t("totpCode") });
      const failure = error();
      body.replaceChildren(el("p", { id: "totp-state" }, t("totpOn", { n: status.recovery_codes_left })), password, code,
        el("button", { id: "totp-disable", onclick: async () => {
          try { await ui.api.totpDisable(password.value, code.value.trim()); await show(); } catch (e) { failure.textContent = explain(e); }
        } }, t("totpDisable")), failure);
      return;
    }
    const failure = error();
    body.replaceChildren(el("p", { id: "totp-state" }, t("totpOff")),
      el("button", { id: "totp-begin", onclick: async () => {
        try { enrol(await ui.api.totpBegin()); } catch (e) { failure.textContent = explain(e); }
      } }, t("totpBegin")), failure);
  }
  function enrol(enrolment) {
    const code = el("input", { id: "totp-confirm-code", autocomplete: "one-time-code", inputmode: "numeric", "aria-label": t("totpCode"), placeholder: t("totpCode") });
    const failure = error();
    // An <img> of the server's SVG: it is displayed, never run.
    const qr = el("img", { id: "totp-qr", alt: t("totpScan"), width: 200, height: 200,
      src: `data:image/svg+xml;base64,${btoa(enrolment.qr_svg)}` });
    body.replaceChildren(el("p", {}, t("totpScan")), qr,
      el("p", {}, t("totpKey"), " ", el("code", { id: "totp-secret" }, enrolment.secret)), code,
      el("button", { id: "totp-confirm", onclick: async () => {
        try {
          const done = await ui.api.totpConfirm(code.value.trim());
          body.replaceChildren(el("p", { id: "totp-state" }, t("recoveryHelp")),
            el("ul", { id: "recovery-codes", class: "codes" }, done.recovery_codes.map((c) => el("li", {}, el("code", {}, c)))));
        } catch (e) { failure.textContent = explain(e); }
      } }, t("totpConfirm")), failure);
    code.focus();
  }
  try { await show(); } catch (e) { body.replaceChildren(el("p", { class: "error" }, explain(e))); }
}

// This account's devices: each one that is signed in, when it was last seen, and a way to
// sign out one that is lost or not one's own (its keys go with it; asked first).
function devicesForm() {
  const list = el("ul", { id: "device-list", class: "devices" });
  const result = el("div", { class: "error", role: "alert", id: "devices-result" });
  async function show() {
    const devices = (await ui.api.devices()).filter((d) => !d.revoked_at);
    list.replaceChildren(...devices.map((d) => el("li", { "data-id": d.id },
      el("span", { class: "name" }, d.name), " ",
      el("span", { class: "sub" }, d.current ? t("thisDevice") : t("lastSeen", { when: `${dayLabel(d.last_seen_at)} ${time(d.last_seen_at)}` })),
      d.current ? null : el("button", { type: "button", class: "ghost danger sign-out", onclick: async () => {
        if (!window.confirm(t("signOutConfirm", { name: d.name }))) return;
        try { await ui.api.revokeDevice(d.id); await show(); } catch (e) { result.textContent = explain(e); }
      } }, t("signOut")))));
  }
  show().catch((e) => { result.textContent = explain(e); });
  return el("div", { id: "devices-form" }, el("h2", {}, t("devicesTitle")), list, result);
}

// The address security notices go to: in force once the mailed code comes back.
function emailForm() {
  const state = el("p", { id: "email-state" });
  const address = el("input", { id: "email-address", type: "email", autocomplete: "email", "aria-label": t("emailAddress"), placeholder: t("emailAddress") });
  const code = el("input", { id: "email-code", inputmode: "numeric", autocomplete: "one-time-code", "aria-label": t("emailCode"), placeholder: t("emailCode"), hidden: true });
  const verify = el("button", { type: "button", id: "email-verify", hidden: true, onclick: async () => {
    try { await ui.api.verifyEmail(code.value.trim()); code.value = ""; await show(); } catch (e) { result.textContent = explain(e); }
  } }, t("emailVerify"));
  const result = el("div", { class: "error", role: "alert", id: "email-result" });
  async function show() {
    const now = await ui.api.email();
    state.textContent = now.email ? t("emailIs", { address: now.email }) : t("emailNone");
    code.hidden = verify.hidden = !now.pending;
    result.textContent = now.pending ? t("emailSent", { address: now.pending }) : "";
  }
  show().catch((e) => { result.textContent = explain(e); });
  return el("div", { id: "email-form" }, el("h2", {}, t("emailTitle")), state, address,
    el("button", { type: "button", id: "email-send", onclick: async () => {
      try { await ui.api.setEmail(address.value.trim()); await show(); code.focus(); } catch (e) { result.textContent = explain(e); }
    } }, t("emailSend")), code, verify, result);
}

// After the on-call's breach procedure: a new password first, then this device makes new keys.
function renderMustChange() {
  root.replaceChildren(el("div", { class: "auth", id: "must-change" },
    el("h1", {}, "SecureConnect"), el("p", { role: "alert" }, t("mustChange")),
    passwordForm(() => enter())));
  document.getElementById("password-current")?.focus();
}

// Changing the password logs out this account's other sessions (whoever knew the old one).
function passwordForm(done = null) {
  const field = (id, label, autocomplete) => el("input", { id, type: "password", autocomplete, "aria-label": label, placeholder: label });
  const current = field("password-current", t("passwordCurrent"), "current-password");
  const fresh = field("password-new", t("passwordNew"), "new-password");
  const again = field("password-again", t("passwordAgain"), "new-password");
  const result = el("div", { role: "status", id: "password-result" });
  return el("form", { id: "password-form", onsubmit: async (e) => {
    e.preventDefault();
    if (fresh.value !== again.value) { result.className = "error"; result.textContent = t("passwordMismatch"); return; }
    try {
      const changed = await ui.api.changePassword(current.value, fresh.value);
      result.className = "";
      result.textContent = t("passwordChanged", { n: changed.revoked_sessions });
      current.value = fresh.value = again.value = "";
      if (done) await done();
    } catch (err) { result.className = "error"; result.textContent = explain(err); }
  } }, el("h2", {}, t("changePassword")), current, fresh, again,
  el("button", { type: "submit", id: "password-change" }, t("changePassword")), result);
}

async function showSafety(username) {
  const number = await ui.secure.safetyNumber(username);
  const status = el("p", { id: "verified-state" }, ui.secure.isVerified(username) ? t("verified") : t("notVerified"));
  const dialog = el("dialog", { id: "safety" },
    el("h2", {}, `${t("safety")}: ${username}`),
    el("p", {}, t("safetyHelp", { name: username })),
    el("div", { class: "number", id: "safety-number" }, display(number)), status,
    el("div", { class: "row" },
      ui.banner && ui.banner.kind === "changed" ? el("button", { class: "ghost", id: "accept-keys", onclick: async () => {
        await ui.secure.acceptIdentity(username); ui.banner = null; renderBanner(); } }, t("accept")) : null,
      el("button", { class: "ghost", id: "mark-verified", onclick: async () => {
        await ui.secure.markVerified(username); status.textContent = t("verified"); } }, t("markVerified")),
      el("button", { onclick: () => dialog.close() }, t("close"))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// Group members: everyone sees them; admins add and remove; anyone may leave. Removing someone
// needs nothing more here: the next message is sent under a fresh sender key shared only with
// the devices still in the group (secure.js checks the member devices on every send).
async function showMembers(shown) {
  let conv = shown;
  const list = el("ul", { id: "member-list" });
  const error = el("div", { class: "error", role: "alert" });
  const admin = conv.role === "admin";
  async function act(action) {
    error.textContent = "";
    try {
      await action();
      await refreshConversations();
      await fill();
      renderSidebar();
    } catch (err) { error.textContent = explain(err); }
  }
  async function fill() {
    const members = await ui.api.members(conv.id);
    await refreshProfiles(members.map((m) => m.username)).catch(quiet);
    list.replaceChildren(...members.map((m) => el("li", { "data-member": m.username },
      personAvatar(m.username),
      el("span", { class: "name", title: m.username }, displayName(m.username)),
      m.role === "admin" ? el("span", { class: "sub" }, ` · ${t("admin")}`) : null,
      admin && m.username !== ui.session.username ? el("button", { class: "ghost",
        "data-remove": m.username, "aria-label": `${t("remove")} ${m.username}`,
        onclick: () => act(() => ui.api.removeMember(conv.id, m.username)) }, t("remove")) : null)));
  }
  const input = el("input", { id: "add-member", placeholder: t("addMember"), "aria-label": t("addMember") });
  const rename = el("input", { id: "group-name", value: conv.name || "", "aria-label": t("groupNameLabel"), maxlength: "200" });
  const groupPicture = el("input", { type: "file", id: "group-picture", accept: "image/*", hidden: true,
    onchange: () => { const file = groupPicture.files[0]; groupPicture.value = "";
      if (file) act(async () => { conv = await ui.api.setGroupAvatar(conv.id, file); }); } });
  const dialog = el("dialog", { id: "members-dialog" },
    el("h2", {}, t("membersTitle")),
    admin ? el("form", { class: "row", id: "group-form", onsubmit: (e) => {
      e.preventDefault();
      act(async () => { conv = await ui.api.renameGroup(conv.id, rename.value); });
    } }, rename, el("button", { type: "submit", id: "rename-group" }, t("rename"))) : null,
    admin ? el("div", { class: "row" }, groupPicture,
      el("button", { type: "button", class: "ghost", id: "group-picture-button", onclick: () => groupPicture.click() }, t("groupPicture")),
      conv.avatar ? el("button", { type: "button", class: "ghost", id: "group-picture-remove",
        onclick: () => act(async () => { conv = await ui.api.removeGroupAvatar(conv.id); }) }, t("removePicture")) : null) : null,
    list,
    admin ? el("form", { class: "row", onsubmit: (e) => {
      e.preventDefault();
      const name = input.value.trim();
      if (name) act(async () => { await ui.api.addMember(conv.id, name); input.value = ""; });
    } }, input, el("button", { type: "submit", id: "add-member-button" }, t("add"))) : null,
    error,
    el("div", { class: "row" },
      el("button", { class: "ghost", id: "leave-group", onclick: async (e) => {
        // Leaving cannot be undone by the person who leaves: the first press asks.
        if (!e.currentTarget.dataset.confirm) {
          e.currentTarget.dataset.confirm = "1";
          e.currentTarget.textContent = t("leaveConfirm");
          e.currentTarget.classList.add("danger");
          return;
        }
        try {
          await ui.api.removeMember(conv.id, ui.session.username);
          dialog.close();
          ui.open = null;
          await refreshConversations();
          render();
        } catch (err) { error.textContent = explain(err); }
      } }, t("leave")),
      el("button", { onclick: () => dialog.close() }, t("close"))));
  dialog.addEventListener("close", () => { dialog.remove(); render(); });
  document.body.append(dialog);
  await fill();
  dialog.showModal();
}

// ----- rendering ----------------------------------------------------------------------------

function render() {
  if (!ui.session) return renderAuth();
  // A full render (reconnected, language switched, dialog closed) must not eat what the person
  // is typing: the draft, its cursor and the focus survive, for the same conversation.
  const old = document.getElementById("composer");
  const draft = old && old.dataset.conv === ui.open ? { value: old.value,
    focused: document.activeElement === old, start: old.selectionStart, end: old.selectionEnd } : null;
  const conv = ui.conversations.find((c) => c.id === ui.open);
  const shell = el("div", { class: `shell${ui.open ? " in-chat" : ""}` },
    el("header", { class: "top" },
      el("span", { class: "brand" }, "SecureConnect"),
      el("span", { class: `status ${ui.status}`, id: "status" }, ui.status === "online" ? t("online") : t("offline")),
      el("span", { class: "spacer" }),
      el("span", { id: "me" }, ui.session.username),
      languagePicker(),
      el("button", { class: "ghost", id: "settings", onclick: () => showSettings() }, t("settings")),
      el("button", { class: "ghost", id: "security", onclick: () => showSecurity() }, t("security")),
      el("button", { class: "ghost", id: "logout", onclick: () => logout() }, t("logout"))),
    el("aside", { id: "sidebar", "aria-label": t("conversations") }),
    el("main", {}, conv ? chatPane(conv) : el("div", { class: "placeholder" }, t("pick"))));
  root.replaceChildren(shell);
  renderSidebar();
  if (conv) { renderMessages(); renderBanner(); renderTyping(); renderUpload(); }
  const box = document.getElementById("composer");
  if (box && draft) {
    box.value = draft.value;
    if (draft.focused) { box.focus(); box.setSelectionRange(draft.start, draft.end); }
  }
}

function renderStatus() {
  const node = document.getElementById("status");
  if (node) {
    node.className = `status ${ui.status}`;
    node.textContent = ui.status === "online" ? t("online") : t("offline");
  }
}

function renderSidebar() {
  const aside = document.getElementById("sidebar");
  if (!aside) return;
  // The list is redrawn whenever something arrives: what is typed in the new-conversation form,
  // and the refusal it got, stay (ui.draft), as does the focus.
  const draft = ui.draft;
  const typingIn = document.activeElement && ["new-people", "new-name"].includes(document.activeElement.id) ? document.activeElement.id : null;
  const people = el("input", { id: "new-people", placeholder: t("people"), "aria-label": t("people"), required: true,
    value: draft.people, oninput: () => { draft.people = people.value; } });
  const name = el("input", { id: "new-name", placeholder: t("groupName"), "aria-label": t("groupName"),
    value: draft.name, oninput: () => { draft.name = name.value; } });
  const error = el("div", { class: "error", role: "alert" }, draft.error);
  const form = ui.showNew ? el("form", { id: "new-form", onsubmit: async (e) => {
    e.preventDefault();
    draft.error = "";
    error.textContent = "";
    try {
      await startConversation(people.value, name.value.trim());
      ui.draft = { people: "", name: "", error: "" };
    } catch (err) {
      draft.error = explain(err);
      const shown = document.querySelector("#new-form .error");
      if (shown) shown.textContent = draft.error;
    }
  } }, people, name, el("button", { type: "submit", id: "new-start" }, t("start")), error) : null;
  const list = el("ul", { id: "conversations" }, ui.conversations.map((c) => {
    const muted = ui.prefs.muted.includes(c.id);
    const live = ui.live && ui.live.has(c.id);  // a call going on there, as Element's list shows
    return el("li", {
      class: `${c.id === ui.open ? "active" : ""}${muted ? " muted" : ""}`, tabindex: "0", "data-id": c.id,
      // Enter opens it; its default must not then type a newline into the composer it focuses.
      onclick: () => openConversation(c.id), onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); openConversation(c.id); } },
    }, convAvatar(c),
    el("span", { class: "summary" },
      el("span", { class: "line" }, el("span", { class: "name" }, title(c)),
        el("span", { class: "when" }, c.last_at ? when(c.last_at) : "")),
      el("span", { class: "line" }, el("span", { class: "preview" }, preview(c)),
        live ? el("span", { class: "call-tag" }, t("callTag")) : null,
        muted ? el("span", { class: "muted-tag" }, t("mutedLabel")) : null,
        c.request ? el("span", { class: "request-tag" }, t("request")) : null,
        c.unread && c.id !== ui.open ? el("span", { class: "badge", "aria-label": `${c.unread} unread` }, c.unread) : null)));
  }));
  // The tab says how many messages wait, as Signal's and Element's do; muted ones do not count.
  const waiting = ui.conversations.reduce((n, c) => n + (c.id !== ui.open && !ui.prefs.muted.includes(c.id) ? c.unread : 0), 0);
  document.title = waiting ? `(${waiting}) SecureConnect` : "SecureConnect";
  // A message arriving redraws the list: whoever is typing a search keeps typing.
  const before = document.getElementById("search");
  const searching = before && document.activeElement === before ? [before.selectionStart, before.selectionEnd] : null;
  const search = el("input", { id: "search", type: "search", placeholder: t("searchPlaceholder"), "aria-label": t("searchPlaceholder"),
    value: ui.query, oninput: () => { ui.query = search.value; renderResults(); },
    onkeydown: (e) => { if (e.key === "Escape") { ui.query = ""; search.value = ""; renderResults(); } } });
  aside.replaceChildren(
    el("button", { class: "new", id: "new-conversation", onclick: () => { ui.showNew = !ui.showNew; renderSidebar(); document.getElementById("new-people")?.focus(); } }, t("newChat")),
    form || "", search,
    el("div", { id: "search-results" }),
    ui.conversations.length ? list : el("p", { class: "empty" }, t("noConversations")));
  if (searching) { search.focus(); search.setSelectionRange(searching[0], searching[1]); }
  if (typingIn) document.getElementById(typingIn)?.focus();
  renderResults();
}

// ----- search: on this device, over what it decrypted (search.js); the server is not asked ----

function indexMessage(plain) {
  if (!ui.search || plain.kind !== "message" || plain.failed) return;
  if (isText(plain)) ui.search.add(plain.conversation_id, plain.seq, plain.text);
  else if (isAttachment(plain)) {
    const pointer = pointerOf(plain);
    if (pointer) ui.search.add(plain.conversation_id, plain.seq, `${pointer.caption} ${pointer.name}`);
  }
  else if (plain.content_type === EDIT) {
    try {
      const edit = JSON.parse(plain.text);
      if (Number.isInteger(edit.to) && typeof edit.text === "string") ui.search.add(plain.conversation_id, edit.to, edit.text);
    } catch { /* not an edit this client can read */ }
  }
}

function renderResults() {
  const node = document.getElementById("search-results");
  const list = document.getElementById("conversations");
  if (!node) return;
  const query = ui.query.trim();
  if (list) list.hidden = query.length >= 2;
  if (query.length < 2 || !ui.search) { node.replaceChildren(); return; }
  const found = [];
  const folds = new Map();
  for (const hit of ui.search.query(query)) {
    const conv = ui.conversations.find((c) => c.id === hit.conversation_id);
    if (!conv) continue;
    if (!folds.has(conv.id)) folds.set(conv.id, fold(ui.secure.known(conv.id), ui.secure.editWindowS));
    const entry = folds.get(conv.id).get(hit.seq);
    // The index remembers words a message once had: what it says now decides.
    if (entry && !entry.deleted && matches(searchable(entry), query)) found.push({ conv, entry });
  }
  found.sort((a, b) => b.entry.message.created_at - a.entry.message.created_at);
  node.replaceChildren(found.length
    ? el("ul", { class: "results" }, found.slice(0, 50).map(({ conv, entry }) => el("li", { tabindex: "0", "data-seq": entry.message.seq,
      onclick: () => openFound(conv.id, entry.message.seq), onkeydown: (e) => { if (e.key === "Enter") openFound(conv.id, entry.message.seq); } },
      el("span", { class: "line" }, el("span", { class: "name" }, title(conv)), el("span", { class: "when" }, when(entry.message.created_at))),
      el("span", { class: "preview" }, `${entry.message.sender}: ${summary(entry).split("\n")[0].slice(0, 120)}`))))
    : el("p", { class: "empty", id: "no-results" }, t("noResults")));
}

async function openFound(id, seq) {
  ui.query = "";
  await openConversation(id);
  const node = document.querySelector(`#messages .msg[data-seq="${seq}"]`);
  if (node) { node.classList.add("found"); node.scrollIntoView({ block: "center" }); }
}

// The newest message this device has read in a conversation, in one line.
function preview(conv) {
  if (!ui.secure) return "";
  const known = ui.secure.known(conv.id);
  const texts = known.filter((m) => isText(m) || isAttachment(m));
  const m = texts[texts.length - 1];
  if (!m) return "";
  const entry = fold(known, ui.secure.editWindowS).get(m.seq);  // as edited, or deleted
  if (!entry) return "";
  const who = m.sender === ui.session.username ? t("youPrefix") : conv.kind === "group" ? `${displayName(m.sender)}: ` : "";
  return who + (entry.deleted ? t("deletedMessage") : summary(entry).split("\n")[0].slice(0, 120));
}

function systemText(c) {
  const actor = displayName(c.actor);
  if (c.action === "rename") return t("renamedGroup", { actor, name: c.name });
  if (c.action === "profile") return c.display_name ? t("changedName", { user: c.actor, name: c.display_name }) : t("removedName", { user: c.actor });
  if (c.action === "avatar") return t(c.removed ? "removedPicture" : "changedPicture", { actor });
  if (c.action === "group_avatar") return t(c.removed ? "removedGroupPicture" : "changedGroupPicture", { actor });
  const key = { create: "started", add: "added", remove: "removed", leave: "left" }[c.action] || "added";
  return t(key, { actor, user: c.user ? displayName(c.user) : "" });
}

function chatPane(conv) {
  const counter = el("div", { class: "counter", id: "length", "aria-live": "polite" });
  // Near the server's limit, how much is left (in characters of this text's kind); past it, how
  // many to take out: the same count sending refuses with, so taking them out is enough.
  const measure = () => {
    const limit = ui.secure.maxMessageBytes || 65536;
    const context = ui.compose;
    const sizeOf = ui.secure.textSizer(conv.id, context && context.mode !== "edit" ? context.seq : null);
    const used = sizeOf(box.value);
    const fits = (text) => sizeOf(text) <= limit;
    counter.classList.toggle("over", used > limit);
    if (used > limit) { counter.textContent = t("charsOver", { n: charsOver(box.value, fits) }); return; }
    if (used < limit * 0.9) { counter.textContent = ""; return; }
    const chars = Math.max(1, [...box.value].length);
    const perChar = Math.max(1, (used - sizeOf("")) / chars);
    counter.textContent = t("charsLeft", { n: Math.floor((limit - used) / perChar) });
  };
  const box = el("textarea", { id: "composer", "data-conv": conv.id, placeholder: t("message"), "aria-label": t("message"),
    oninput: () => { typing(); measure(); grow(); }, onkeydown: (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); } } });
  // Several lines (Shift+Enter) grow the box up to its CSS max-height, then it scrolls.
  const grow = () => { box.style.height = "auto"; box.style.height = `${Math.max(box.scrollHeight + 2, 44)}px`; };
  const failure = el("div", { class: "error", id: "send-error", role: "alert" });
  async function submit() {
    const text = box.value.trim();
    if (!text) return;
    box.value = "";
    grow();
    failure.textContent = "";
    typingSent = 0;  // the next keystroke announces typing again
    const context = ui.compose;
    try {
      if (context && context.mode === "edit") {
        addMessage(await ui.secure.sendEvent(conv.id, EDIT, { to: context.seq, text }));
        setCompose(null);
      } else if (await send(text, context ? context.seq : null)) setCompose(null);
      else box.value = text;
    } catch (error) {
      // Nothing typed is lost: the text goes back in the box, and the reason is shown.
      if (!box.value) box.value = text;
      if (error instanceof MessageTooLong) {
        // Signal sends a long text as a text file; here the person chooses to.
        failure.replaceChildren(t("tooLong", { n: error.over }), " ",
          el("button", { type: "button", class: "ghost", id: "send-as-file", onclick: () => {
            const whole = box.value;
            box.value = "";
            grow();
            failure.textContent = "";
            measure();
            sendFiles(conv.id, [new File([whole], "message.txt", { type: "text/plain" })]);
          } }, t("sendAsFile")));
        measure();
        return;
      }
      console.warn("send failed:", error.message);
      failure.textContent = t("sendFailed", { reason: explain(error) });
    }
  }
  const others = conv.members.filter((m) => m !== ui.session.username);
  const picker = el("input", { type: "file", id: "file-input", multiple: true, hidden: true,
    onchange: () => { const files = [...picker.files]; picker.value = ""; sendFiles(conv.id, files); } });
  box.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])];
    if (files.length) { e.preventDefault(); sendFiles(conv.id, files); }
  });
  return el("section", { style: "display:flex;flex-direction:column;height:100%;min-height:0",
    ondragover: (e) => { if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) e.preventDefault(); },
    ondrop: (e) => { if (e.dataTransfer && e.dataTransfer.files.length) { e.preventDefault(); sendFiles(conv.id, [...e.dataTransfer.files]); } } },
    el("div", { class: "chat-head" },
      el("button", { class: "ghost back", onclick: () => { ui.open = null; render(); } }, "← " + t("back")),
      convAvatar(conv),
      el("div", {}, el("div", { class: "title", id: "chat-title" }, title(conv)),
        el("div", { class: "sub" }, conv.kind === "group" ? t("members", { n: conv.members.length }) : "")),
      el("span", { class: "spacer" }),
      callButtons(conv),
      el("button", { class: "ghost", id: "mute-button", "aria-pressed": ui.prefs.muted.includes(conv.id) ? "true" : "false",
        onclick: () => toggleMute(conv.id) }, ui.prefs.muted.includes(conv.id) ? t("unmute") : t("mute")),
      conv.kind === "group" ? el("button", { class: "ghost", id: "members-button", onclick: () => showMembers(conv).catch((e) => quiet(e)) }, t("membersTitle")) : null,
      others.length === 1 ? el("button", { class: "ghost", id: "safety-button", onclick: () => showSafety(others[0]) }, t("safety")) : null),
    el("div", { id: "banner" }),
    conv.request ? requestPanel(conv) : null,
    el("div", { class: "lock" }, t("encrypted")),
    el("div", { class: "messages", id: "messages", role: "log" }),
    el("div", { class: "typing", id: "typing" }), failure, counter,
    el("div", { class: "chips", id: "suggestions", role: "group", "aria-label": t("suggestTitle"), hidden: true }),
    el("div", { class: "compose-context", id: "compose-context", hidden: true }),
    el("div", { class: "upload", id: "upload", role: "status", hidden: true }),
    el("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); submit(); } },
      el("button", { type: "button", class: "ghost icon", id: "attach", title: t("attach"), "aria-label": t("attach"),
        onclick: () => picker.click() }, icon("attach")), picker,
      el("button", { type: "button", class: "ghost icon", id: "record", title: t("record"), "aria-label": t("record"),
        onclick: () => toggleRecording(conv.id) }, icon("mic")),
      box,
      el("button", { type: "submit", id: "send" }, t("send"))));
}

// A message request: someone not in contact put this person here. Accepting (or replying)
// makes it an ordinary conversation; deleting leaves it; blocking also stops the asker.
function requestPanel(conv) {
  const answer = (block) => async () => {
    if (block === null) await ui.api.acceptRequest(conv.id);
    else { await ui.api.declineRequest(conv.id, block); ui.open = null; }
    await refreshConversations();
    render();
    if (block === null) { renderMessages(); await markRead(); await catchUpOnCalls({ conversationId: conv.id }); }
  };
  const name = conv.requested_by || "";
  return el("div", { class: "request", id: "request", role: "region", "aria-label": t("request") },
    el("p", {}, t("requestFrom", { name })),
    el("div", { class: "actions" },
      el("button", { id: "request-accept", onclick: () => answer(null)().catch(quiet) }, t("requestAccept")),
      el("button", { class: "ghost", id: "request-decline", onclick: () => answer(false)().catch(quiet) }, t("requestDecline")),
      el("button", { class: "ghost danger", id: "request-block", onclick: () => answer(true)().catch(quiet) }, t("requestBlock", { name }))));
}

// Calls this device did not hear of as they changed: one started while a conversation was a
// request (once accepted, it rings), and those that started or ended while the device was
// away (closed, reloading, offline): call changes are not kept for a device that missed them.
async function catchUpOnCalls({ late = false, conversationId = null } = {}) {
  const open = await ui.api.openCalls();
  for (const call of open) if (!conversationId || call.conversation_id === conversationId) onCall(call, late);
  if (conversationId || !ui.live) return;
  const gone = [...ui.live].filter(([, call]) => !open.some((c) => c.id === call.id)
    && !(ui.call && ui.call.inCall && ui.call.id === call.id));
  for (const [conv] of gone) ui.live.delete(conv);
  if (gone.length) { renderCall(); render(); }  // the list's "call" tags too
}

function callButtons(conv) {
  const live = ui.live && ui.live.get(conv.id);
  if (ui.call && ui.call.inCall) return null;
  if (live && live.state !== "ended") {
    return el("button", { id: "join-call", onclick: () => joinCall(live) }, t("joinCall"));
  }
  return el("span", { class: "call-buttons" },
    el("button", { class: "ghost", id: "call-voice", "aria-label": t("voiceCallButton"), onclick: () => startCall(conv, "audio") }, t("voiceCallButton")),
    el("button", { class: "ghost", id: "call-video", "aria-label": t("videoCallButton"), onclick: () => startCall(conv, "video") }, t("videoCallButton")));
}

function receiptState(seq) {
  const others = ui.receipts.filter((r) => r.username !== ui.session.username);
  if (!others.length) return t("sent");
  if (others.every((r) => r.read_seq >= seq)) return t("read");
  if (others.every((r) => r.delivered_seq >= seq)) return t("delivered");
  return t("sent");
}

function renderMessages() {
  const box = document.getElementById("messages");
  if (!box) return;
  const items = [...(ui.messages.get(ui.open) || new Map()).values()].sort((a, b) => a.seq - b.seq);
  const folded = fold(items, ui.secure.editWindowS);
  const nodes = [];
  let previous = null;
  for (const m of items) {
    if (m.kind === "message" && EVENTS.includes(m.content_type)) continue;  // folded into their targets
    // A day's first event is headed by its date; a message that follows the same sender's
    // within five minutes joins it, without their name again.
    if (m.created_at && (!previous || dayOf(previous.created_at) !== dayOf(m.created_at))) {
      nodes.push(el("div", { class: "day", role: "separator" }, dayLabel(m.created_at)));
    }
    const follows = previous && !previous.membership && !previous.call && !previous.failed && !m.membership && !m.call
      && previous.sender === m.sender && m.created_at - previous.created_at < 300000 && dayOf(previous.created_at) === dayOf(m.created_at);
    previous = m;
    if (m.membership) { nodes.push(el("div", { class: "system" }, systemText(m.membership))); continue; }
    if (m.call) { nodes.push(el("div", { class: "system call" }, callSummary(m))); continue; }
    const mine = m.sender === ui.session.username;
    if (m.failed === "before_this_device") { nodes.push(el("div", { class: "msg failed before" }, t("beforeThisDevice", { name: displayName(m.sender) }))); continue; }
    if (m.failed) { nodes.push(el("div", { class: "msg failed" }, t("undecryptable", { code: m.failed }))); continue; }
    nodes.push(bubble(m, folded, mine, follows));
  }
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  box.replaceChildren(...nodes);
  if (atBottom || nodes.length < 30) box.scrollTop = box.scrollHeight;
  renderSuggestions(items, folded);
}

// One message as people see it now: what it answers, its text (edited, or deleted), its
// reactions, and on hover or focus what one can do with it.
function bubble(m, folded, mine, follows) {
  const entry = folded.get(m.seq) || { text: String(m.text), edited: false, deleted: false, reactions: new Map() };
  const me = ui.session.username;
  let quote = null;
  if (Number.isInteger(m.reply_to)) {
    const target = folded.get(m.reply_to);
    quote = el("div", { class: "quote" }, target ? el("span", { class: "who" }, displayName(target.message.sender)) : null,
      target ? (target.deleted ? t("deletedMessage") : summary(target).split("\n")[0].slice(0, 140)) : t("quoteMissing"));
  }
  const changeable = mine && !entry.deleted && Date.now() - m.created_at <= ui.secure.editWindowS * 1000;
  const actions = entry.deleted ? null : el("div", { class: "actions" },
    el("button", { type: "button", class: "act-reply", onclick: () => setCompose({ mode: "reply", seq: m.seq, sender: m.sender, text: summary(entry) }) }, t("reply")),
    ["👍", "❤️", "😂"].map((emoji) => el("button", { type: "button", class: "act-react", "data-emoji": emoji,
      "aria-label": t("reactWith", { emoji }), onclick: () => react(m.seq, emoji, (entry.reactions.get(emoji) || []).includes(me)) }, emoji)),
    changeable && !entry.attachment ? el("button", { type: "button", class: "act-edit", onclick: () => setCompose({ mode: "edit", seq: m.seq, sender: m.sender, text: entry.text }) }, t("edit")) : null,
    changeable ? el("button", { type: "button", class: "act-delete", onclick: () => confirmDelete(m.seq) }, t("deleteForEveryone")) : null);
  const reactions = entry.reactions.size ? el("div", { class: "reactions" }, [...entry.reactions].map(([emoji, who]) =>
    el("button", { type: "button", class: `reaction${who.includes(me) ? " mine" : ""}`, title: who.join(", "), "data-emoji": emoji,
      "aria-label": who.includes(me) ? t("removeReaction", { emoji }) : t("reactWith", { emoji }),
      onclick: () => react(m.seq, emoji, who.includes(me)) }, `${emoji} ${who.length}`))) : null;
  return el("div", { class: `msg${mine ? " mine" : ""}${follows ? " cont" : ""}${entry.deleted ? " deleted" : ""}`, "data-seq": m.seq, tabindex: "0" },
    mine || follows ? null : el("div", { class: "who", title: m.sender }, displayName(m.sender)), quote,
    entry.attachment ? attachmentView(entry.attachment) : null,
    entry.text || !entry.attachment ? el("span", { class: "body" }, entry.deleted ? t("deletedMessage") : linkify(entry.text)) : null,
    reactions,
    el("div", { class: "meta" }, time(m.created_at), entry.edited ? ` · ${t("edited")}` : "", mine ? ` · ${receiptState(m.seq)}` : ""),
    actions);
}

async function react(seq, emoji, remove) {
  try {
    addMessage(await ui.secure.sendEvent(ui.open, REACTION, { to: seq, emoji, remove }));
  } catch (error) { quiet(error); }
}

function confirmDelete(seq) {
  const dialog = el("dialog", { id: "delete-dialog" }, el("p", {}, t("deleteConfirm")),
    el("div", { class: "row" },
      el("button", { class: "ghost", id: "delete-cancel", onclick: () => dialog.close() }, t("cancel")),
      el("button", { class: "ghost danger", id: "delete-confirm", onclick: async () => {
        dialog.close();
        try {
          const target = (ui.messages.get(ui.open) || new Map()).get(seq);
          addMessage(await ui.secure.sendEvent(ui.open, DELETE, { to: seq }));
          const pointer = target && pointerOf(target);
          if (pointer) await ui.api.deleteBlob(pointer.blob).catch(() => {});  // its file goes too
        } catch (error) { quiet(error); }
      } }, t("deleteForEveryone"))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// Replying to or editing a message: a line above the composer says which, with Cancel.
function setCompose(context) {
  ui.compose = context;
  const node = document.getElementById("compose-context");
  const box = document.getElementById("composer");
  if (!node || !box) return;
  if (context && context.mode === "edit") { box.value = context.text; box.dispatchEvent(new Event("input")); }
  node.hidden = !context;
  node.replaceChildren(...(context ? [
    el("span", { class: "what" }, context.mode === "edit" ? t("editing") : `${t("replyingTo", { name: context.sender })}: ${context.text.split("\n")[0]}`),
    el("button", { type: "button", class: "ghost", id: "compose-cancel", onclick: () => { if (ui.compose && ui.compose.mode === "edit") box.value = ""; setCompose(null); } }, t("cancelCompose")),
  ] : []));
  if (context) box.focus();
}

// ----- attachments (attachments.js): encrypted here, uploaded as ciphertext -------------------

// One line for an entry, where a text is expected (list preview, quote, search, notification).
function summary(entry) {
  const a = entry.attachment;
  if (!a) return entry.text;
  const kind = a.type.startsWith("image/") ? `📷 ${t("photo")}` : a.type.startsWith("audio/") ? `🎤 ${t("voiceNote")}` : `📎 ${a.name}`;
  return entry.text ? `${kind} · ${entry.text}` : kind;
}

function searchable(entry) {
  return entry.attachment ? `${entry.text} ${entry.attachment.name}` : entry.text;
}

function renderUpload() {
  const node = document.getElementById("upload");
  if (!node) return;
  const u = ui.upload && ui.upload.conv === ui.open ? ui.upload : null;
  node.hidden = !u;
  node.replaceChildren(...(u ? [
    u.error ? el("span", { class: "error" }, u.error)
      : el("span", {}, t("uploading", { name: u.name, pct: u.pct })),
    u.error ? null : el("progress", { id: "upload-progress", max: "100", value: String(u.pct) }),
  ] : []));
}

async function sendFiles(conversationId, files) {
  if (!ui.limits) ui.limits = await ui.api.attachmentUsage().catch(() => null);
  for (const file of files) {
    const limit = ui.limits ? ui.limits.max_attachment_bytes : Infinity;
    if (AT.sealedSize(file.size) > limit) {
      ui.upload = { conv: conversationId, name: file.name, pct: 0,
        error: t("tooBig", { name: file.name, size: AT.humanSize(file.size), limit: AT.humanSize(limit) }) };
      renderUpload();
      continue;
    }
    ui.upload = { conv: conversationId, name: file.name, pct: 0 };
    renderUpload();
    try {
      const pointer = await AT.upload(ui.api, conversationId, file, (done, total) => {
        ui.upload = { conv: conversationId, name: file.name, pct: total ? Math.floor((100 * done) / total) : 100 };
        renderUpload();
      });
      if (file.durationMs) pointer.durationMs = file.durationMs;
      const reply = ui.compose && ui.compose.mode === "reply" ? ui.compose.seq : null;
      addMessage(await ui.secure.sendAttachment(conversationId, pointer, reply));
      if (reply !== null) setCompose(null);
      ui.upload = null;
      scheduleRefresh();
    } catch (error) {
      console.warn("attachment not sent:", error.message);
      ui.upload = { conv: conversationId, name: file.name, pct: 0, error: t("uploadFailed", { name: file.name, reason: explain(error) }) };
    }
    renderUpload();
  }
}

// Decrypted files are kept for the session by blob id: opening twice downloads once.
const opened = new Map();
const players = new Map();  // blob id -> the opened voice note's element
async function openAttachment(pointer) {
  if (!opened.has(pointer.blob)) opened.set(pointer.blob, URL.createObjectURL(await AT.download(ui.api, pointer)));
  return opened.get(pointer.blob);
}

function attachmentView(a) {
  const status = el("span", { class: "attachment-status", role: "status" });
  const failed = (error) => {
    status.textContent = error instanceof AT.AttachmentCorrupt ? t("attachmentBroken") : explain(error);
  };
  const save = async () => {
    status.textContent = t("downloading");
    try {
      const url = await openAttachment(a);
      status.textContent = "";
      const link = el("a", { href: url, download: a.name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (error) { failed(error); }
  };
  if (a.type.startsWith("image/") && a.thumb) {
    const thumb = el("img", { class: "thumb", alt: a.name, src: `data:image/jpeg;base64,${AT.thumbBase64(a)}`,
      width: a.width && a.height ? String(Math.min(320, a.width)) : null, tabindex: "0", role: "button",
      onclick: () => showLightbox(a).catch(failed), onkeydown: (e) => { if (e.key === "Enter") showLightbox(a).catch(failed); } });
    return el("div", { class: "attachment image" }, thumb, status);
  }
  if (a.type.startsWith("audio/")) {
    // An opened voice note is the same element on every redraw of the timeline: a message or
    // a receipt arriving must not stop it mid-sentence (or swallow a click on play).
    if (players.has(a.blob)) return players.get(a.blob);
    const holder = el("div", { class: "attachment audio" });
    const play = el("button", { type: "button", class: "ghost play", onclick: async () => {
      status.textContent = t("downloading");
      try {
        const audio = el("audio", { controls: true, src: await openAttachment(a) });
        holder.replaceChildren(audio);
        players.set(a.blob, holder);
        if (!holder.isConnected) renderMessages();  // redrawn while it downloaded
        audio.play().catch(() => {});
      } catch (error) { failed(error); }
    } }, `▶ ${t("voiceNote")}${a.durationMs ? ` · ${Math.round(a.durationMs / 1000)} s` : ""}`);
    holder.append(play, status);
    return holder;
  }
  return el("div", { class: "attachment file" },
    el("span", { class: "file-icon" }, icon("attach")),
    el("span", { class: "file-name" }, a.name), el("span", { class: "file-size" }, AT.humanSize(a.size)),
    el("button", { type: "button", class: "ghost file-download", onclick: save }, t("download")), status);
}

async function showLightbox(a) {
  const url = await openAttachment(a);
  const dialog = el("dialog", { id: "lightbox", class: "lightbox", "aria-label": a.name },
    el("img", { src: url, alt: a.name }),
    el("div", { class: "row" }, el("span", { class: "file-name" }, a.name),
      el("a", { href: url, download: a.name, class: "button ghost", id: "lightbox-download" }, t("download")),
      el("button", { class: "ghost", id: "lightbox-close", onclick: () => dialog.close() }, t("close"))));
  dialog.addEventListener("close", () => dialog.remove());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  document.body.append(dialog);
  dialog.showModal();
}

// A voice note: recorded with MediaRecorder, then sent as an audio attachment like any file.
async function toggleRecording(conversationId) {
  const button = document.getElementById("record");
  if (ui.recorder) {
    ui.recorder.media.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    ui.upload = { conv: conversationId, name: "", pct: 0, error: t("micDenied") };
    renderUpload();
    return;
  }
  const media = new MediaRecorder(stream);
  const parts = [];
  const started = Date.now();
  media.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  media.onstop = () => {
    clearInterval(ui.recorder.timer);
    ui.recorder = null;
    stream.getTracks().forEach((track) => track.stop());
    if (button) { button.replaceChildren(icon("mic")); button.setAttribute("aria-label", t("record")); button.classList.remove("recording"); }
    const type = (media.mimeType || "audio/webm").split(";")[0];
    const file = new File(parts, `voice-${new Date(started).toISOString().slice(0, 19).replace(/[:T]/g, "-")}.webm`, { type });
    file.durationMs = Date.now() - started;
    sendFiles(conversationId, [file]);
  };
  media.start(250);
  const tick = () => {
    if (button) button.replaceChildren(icon("stop"), ` ${t("recording", { s: Math.floor((Date.now() - started) / 1000) })}`);
  };
  ui.recorder = { media, started, timer: setInterval(tick, 500) };
  if (button) { button.setAttribute("aria-label", t("stopRecording")); button.classList.add("recording"); }
  tick();
}

function callSummary(m) {
  const c = m.call;
  const kind = c.media === "audio" ? "Voice" : "Video";
  const outcome = { missed: "missed", declined: "declined" }[c.outcome] || "ended";
  const minutes = Math.max(1, Math.round(c.duration_ms / 60000));
  return t(`${outcome}${kind}`, { caller: m.sender, at: time(c.started_at), minutes,
    people: (c.participants || []).join(", ") });
}

function renderBanner() {
  const node = document.getElementById("banner");
  if (!node) return;
  node.replaceChildren(ui.banner ? el("div", { class: "banner", role: "alert" }, ui.banner.text,
    ui.banner.username
      ? el("button", { class: "ghost", id: "banner-review", onclick: () => showSafety(ui.banner.username) }, t("review"))
      : el("button", { class: "ghost", onclick: () => showSecurity().catch(quiet) }, t("security"))) : "");
}

function renderTyping() {
  const node = document.getElementById("typing");
  if (!node) return;
  const now = Date.now();
  const who = [...ui.typing].filter(([k, until]) => k.startsWith(`${ui.open}|`) && until > now).map(([k]) => k.split("|")[1]);
  node.textContent = who.length ? `${who.join(", ")} ${t("typing")}` : "";
}
setInterval(renderTyping, 2000);

// ----- suggested replies: computed here from decrypted text (decision 0027) -----------------
// The server hands out the pack and receives counts (rows shown, chip positions taken, packs
// that failed to load); never a word of the text, the conversation or the chip.

async function loadSuggestions() {
  ui.suggest.settings = { device: true, off: [], ...((await store.load("suggest-settings")) || {}) };
  try {
    ui.suggest.pack = await fetchPack();
    ui.suggest.unavailable = false;
  } catch (error) {
    console.warn("suggested replies unavailable:", error.message);
    ui.suggest.unavailable = true;
    ui.suggest.counts.load_failures++;
    flushSuggestStats();
  }
  renderSuggestions();
}

function suggestionsOn(id) {
  return ui.suggest.settings.device && !ui.suggest.settings.off.includes(id);
}

// `items`, `folded`: the open timeline as renderMessages just drew it (folded once per draw).
function renderSuggestions(items = null, folded = null) {
  const node = document.getElementById("suggestions");
  if (!node) return;
  const conv = ui.conversations.find((c) => c.id === ui.open);
  const pack = ui.suggest.pack;
  const chips = [];
  if (pack && conv && !conv.request && suggestionsOn(conv.id)) {
    const all = items || [...(ui.messages.get(ui.open) || new Map()).values()].sort((a, b) => a.seq - b.seq);
    folded = folded || fold(all, ui.secure.editWindowS);
    const said = all.filter(isText).map((m) => ({ ...m, text: folded.get(m.seq).text, deleted: folded.get(m.seq).deleted }));
    const last = said[said.length - 1];
    // A file after the last text is what is being answered now: the pack reads words only.
    const fileSince = last && all.some((m) => m.seq > last.seq && folded.has(m.seq) && folded.get(m.seq).attachment);
    if (last && !last.deleted && !fileSince && last.sender !== ui.session.username) {
      // Replies in the language this person writes to them in, else the interface's; chips
      // leaning towards how this person answers them.
      const own = said.filter((m) => m.sender === ui.session.username).map((m) => m.text);
      // What the sender wrote just before, with nothing in between: one thought, split up.
      const run = [];
      for (let i = said.length - 2; i >= 0 && run.length < 4 && said[i].sender === last.sender; i--) run.unshift(said[i].text);
      const verdict = pack.decide(last.text, pack.language(own.slice(-5), lang()), run, own);
      verdict.suggestions.forEach((s, n) => chips.push(el("button", { type: "button", class: "chip",
        "data-intent": s.intent, onclick: () => takeSuggestion(s.text, n + 1) }, s.text)));
      const key = `${ui.open}|${last.seq}`;
      if (chips.length && !ui.suggest.shownFor.has(key)) {
        ui.suggest.shownFor.add(key);
        ui.suggest.counts.shown++;
      }
    }
  }
  node.replaceChildren(...chips);
  node.hidden = !chips.length;
}

// A chip fills the composer; sending stays the person's act.
function takeSuggestion(text, position) {
  const box = document.getElementById("composer");
  if (!box) return;
  box.value = text;
  box.focus();
  box.setSelectionRange(text.length, text.length);
  box.dispatchEvent(new Event("input"));
  ui.suggest.counts.taken.push(position);
}

async function flushSuggestStats() {
  const c = ui.suggest.counts;
  if (!ui.session || (!c.shown && !c.taken.length && !c.load_failures)) return false;
  ui.suggest.counts = { shown: 0, taken: [], load_failures: 0 };
  const report = { pack_version: ui.suggest.pack ? ui.suggest.pack.version : "none",
    shown: Math.min(c.shown, 10000), taken: c.taken.slice(0, 1000), load_failures: Math.min(c.load_failures, 100) };
  try { await ui.api.suggestReport(report); return true; } catch (error) { quiet(error); return false; }
}
setInterval(flushSuggestStats, 60000);

function showSettings() {
  const s = ui.suggest.settings;
  const device = el("input", { type: "checkbox", id: "suggest-device", checked: s.device });
  const here = ui.open ? el("input", { type: "checkbox", id: "suggest-here", checked: !s.off.includes(ui.open) }) : null;
  const apply = async () => {
    s.device = device.checked;
    if (here) s.off = here.checked ? s.off.filter((id) => id !== ui.open) : [...new Set([...s.off, ui.open])];
    await store.save("suggest-settings", s);
    renderSuggestions();
  };
  device.addEventListener("change", apply);
  if (here) here.addEventListener("change", apply);
  const theme = el("select", { id: "theme", "aria-label": t("appearance"), onchange: async () => {
    ui.prefs.theme = theme.value;
    applyTheme();
    await savePrefs();
  } }, ["system", "light", "dark"].map((v) => el("option", { value: v, selected: ui.prefs.theme === v },
    t({ system: "themeSystem", light: "themeLight", dark: "themeDark" }[v]))));
  const denied = el("p", { class: "error", id: "notify-denied", role: "alert" },
    "Notification" in window && Notification.permission === "denied" ? t("notifyDenied") : "");
  const notifyOn = el("input", { type: "checkbox", id: "notify-on", checked: ui.prefs.notify, onchange: async () => {
    // Asked only when the person turns it on: a browser remembers a refusal for good.
    if (notifyOn.checked && "Notification" in window && Notification.permission !== "granted") {
      notifyOn.checked = (await Notification.requestPermission()) === "granted";
      denied.textContent = notifyOn.checked ? "" : t("notifyDenied");
    }
    ui.prefs.notify = notifyOn.checked;
    await savePrefs();
  } });
  const notifyText = el("input", { type: "checkbox", id: "notify-text", checked: ui.prefs.notifyText, onchange: async () => {
    ui.prefs.notifyText = notifyText.checked;
    await savePrefs();
  } });
  const me = ui.session.username;
  const note = el("p", { class: "note", id: "profile-note", role: "status" });
  const mine = el("span", { id: "my-avatar", class: "big" }, personAvatar(me));
  const nameInput = el("input", { id: "display-name", maxlength: "64", "aria-label": t("displayNameLabel"),
    placeholder: t("displayNamePlaceholder"), value: (ui.profiles.get(me) || {}).display_name || "" });
  async function saveProfile(change) {
    note.textContent = "";
    try {
      const p = await change();
      ui.profiles.set(me, { display_name: p.display_name, avatar: p.avatar });
      mine.replaceChildren(personAvatar(me));
      note.textContent = t("profileSaved");
      render();
    } catch (error) { note.textContent = explain(error); }
  }
  const picture = el("input", { type: "file", id: "my-picture", accept: "image/*", hidden: true, onchange: () => {
    const file = picture.files[0];
    picture.value = "";
    if (file) saveProfile(() => ui.api.setAvatar(file));
  } });
  const dialog = el("dialog", { id: "settings-dialog" },
    el("h2", {}, t("profileTitle")),
    el("div", { class: "profile-row" }, mine, el("div", {},
      el("button", { type: "button", class: "ghost", id: "my-picture-button", onclick: () => picture.click() }, t("choosePicture")),
      el("button", { type: "button", class: "ghost", id: "my-picture-remove", onclick: () => saveProfile(() => ui.api.removeAvatar()) }, t("removePicture")),
      picture)),
    el("form", { class: "row", id: "profile-form", onsubmit: (e) => { e.preventDefault(); saveProfile(() => ui.api.setDisplayName(nameInput.value.trim())); } },
      el("label", { for: "display-name", class: "visually-hidden" }, t("displayNameLabel")), nameInput,
      el("button", { type: "submit", id: "save-profile" }, t("save"))),
    el("p", { class: "sub" }, t("pictureHelp")), note,
    el("h2", {}, t("appearance")), theme,
    el("h2", {}, t("notifyTitle")),
    el("p", {}, el("label", {}, notifyOn, " ", t("notifyOn"))),
    el("p", {}, el("label", {}, notifyText, " ", t("notifyText"))), denied,
    el("h2", {}, t("suggestTitle")),
    el("p", { id: "suggest-where" }, t("suggestWhere")),
    el("p", {}, el("label", {}, device, " ", t("suggestDevice"))),
    here ? el("p", {}, el("label", {}, here, " ", t("suggestHere"))) : null,
    ui.suggest.unavailable ? el("p", { class: "error", id: "suggest-unavailable" }, t("suggestUnavailable")) : null,
    el("div", { class: "row" }, el("button", { class: "ghost", id: "settings-close", onclick: () => dialog.close() }, t("close"))));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// ----- appearance, mute and notifications (kept on this device) ------------------------------

async function savePrefs() {
  await store.save("ui-settings", ui.prefs);
}

function applyTheme() {
  localStorage.setItem("sc-theme", ui.prefs.theme);
  if (ui.prefs.theme === "light" || ui.prefs.theme === "dark") document.documentElement.dataset.theme = ui.prefs.theme;
  else delete document.documentElement.dataset.theme;
}

async function toggleMute(id) {
  const muted = new Set(ui.prefs.muted);
  if (muted.has(id)) muted.delete(id); else muted.add(id);
  ui.prefs.muted = [...muted];
  await savePrefs();
  render();
}

// A desktop notification while this tab is in the background, for a conversation that is not
// muted, by someone else; its text only if the person allows it. Clicking opens the chat.
function notify(plain, text = null) {
  if (!ui.prefs.notify || document.visibilityState === "visible") return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if (plain.sender === ui.session.username || ui.prefs.muted.includes(plain.conversation_id)) return;
  if (plain.failed || plain.membership || (plain.content_type && !isText(plain) && !isAttachment(plain))) return;
  if (!text && isAttachment(plain)) {
    const pointer = pointerOf(plain);
    if (!pointer) return;
    text = ui.prefs.notifyText ? summary({ text: pointer.caption, attachment: pointer }) : t("newMessage");
  }
  const conv = ui.conversations.find((c) => c.id === plain.conversation_id);
  const heading = conv && conv.kind === "group" ? `${plain.sender} · ${title(conv)}` : plain.sender;
  const body = text || (ui.prefs.notifyText && typeof plain.text === "string" ? plain.text.slice(0, 200) : t("newMessage"));
  const note = new Notification(heading, { body, tag: plain.conversation_id });
  note.onclick = () => { window.focus(); openConversation(plain.conversation_id); note.close(); };
}

// Call diagnostics, for support and for the tests: counters only, never a key or a frame.
window.secureconnect = {
  async callStats() {
    const c = ui.call;
    if (!c || !c.inCall) return null;
    const out = { state: c.state, framesDecoded: 0, audioSamples: 0, framesSent: 0,
      decryptFailures: c.stats.failures, decrypted: c.stats.decrypted, candidateTypes: [],
      keysFrom: [...c.keysFrom.keys()], waitingForKeys: c.waitingForKeys(), keys: { ...c.counters },
      steps: { ...c.steps } };
    for (const pc of [c.pub, c.sub]) {
      if (!pc || pc.connectionState === "closed") continue;
      const report = await pc.getStats();
      const byId = new Map([...report.values()].map((r) => [r.id, r]));
      for (const r of report.values()) {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          out.framesDecoded += r.framesDecoded || 0;
          out.frameWidth = Math.max(out.frameWidth || 0, r.frameWidth || 0);
        }
        if (r.type === "inbound-rtp" && r.kind === "audio") out.audioSamples += r.totalSamplesReceived || 0;
        if (r.type === "outbound-rtp" && r.kind === "video") out.framesSent += r.framesEncoded || 0;
        if (r.type === "transport" && r.selectedCandidatePairId) {
          const pair = byId.get(r.selectedCandidatePairId);
          const local = pair && byId.get(pair.localCandidateId);
          if (local) out.candidateTypes.push(local.candidateType);
        }
      }
    }
    return out;
  },
  call: () => ui.call,
  duplicatesDropped: () => ui.duplicatesDropped,
  flushSuggestStats,
};

document.addEventListener("visibilitychange", () => {
  if (ui.open && document.visibilityState === "visible") markRead();
  if (document.visibilityState === "hidden") flushSuggestStats();
});
boot();
