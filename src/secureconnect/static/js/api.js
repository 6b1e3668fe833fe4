// The HTTP and WebSocket client for the browser: the same API the Python SDK uses.
import { b64, unb64 } from "./crypto/primitives.js";

// The realtime protocol this client speaks (docs/api.md); the server refuses others with 4400.
export const PROTOCOL = 2;
const REQUEST_TIMEOUT_MS = 30000;

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

export class Api {
  constructor(base = location.origin, token = null) {
    this.base = base;
    this.token = token;
  }

  async call(method, path, body = undefined) {
    const headers = { "Content-Type": "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      // A request that hangs must fail, not hold up whatever waits for it.
      response = await fetch(this.base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (error) {
      if (error.name === "TimeoutError") throw new ApiError(0, "timeout", "the server did not answer in time");
      throw new ApiError(0, "offline", "cannot reach the server");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const e = data && data.error;
      const retryAfter = parseInt(response.headers.get("Retry-After") || "0", 10) || 0;
      throw new ApiError(response.status, e ? e.code : "http_error", e ? e.message : response.statusText, retryAfter);
    }
    return data;
  }

  register(username, password) { return this.call("POST", "/v1/auth/register", { username, password }); }
  async login(username, password, deviceName, deviceId = null, totpCode = null) {
    const data = await this.call("POST", "/v1/auth/login",
      { username, password, device_name: deviceName, device_id: deviceId, totp_code: totpCode || null });
    this.token = data.token;
    return data;
  }
  logout() { return this.call("POST", "/v1/auth/logout"); }
  changePassword(current, fresh) { return this.call("POST", "/v1/auth/password", { current_password: current, new_password: fresh }); }
  email() { return this.call("GET", "/v1/me/email"); }
  setEmail(email) { return this.call("PUT", "/v1/me/email", { email }); }
  verifyEmail(code) { return this.call("POST", "/v1/me/email/verify", { code }); }
  totpStatus() { return this.call("GET", "/v1/auth/totp"); }
  totpBegin() { return this.call("POST", "/v1/auth/totp"); }
  totpConfirm(code) { return this.call("POST", "/v1/auth/totp/confirm", { code }); }
  totpDisable(password, code) { return this.call("POST", "/v1/auth/totp/disable", { password, code }); }
  me() { return this.call("GET", "/v1/me"); }
  devices() { return this.call("GET", "/v1/devices"); }
  revokeDevice(id) { return this.call("DELETE", `/v1/devices/${encodeURIComponent(id)}`); }
  conversations() { return this.call("GET", "/v1/conversations"); }
  conversation(id) { return this.call("GET", `/v1/conversations/${id}`); }
  direct(username) { return this.call("POST", "/v1/conversations", { kind: "direct", members: [username] }); }
  group(members, name) { return this.call("POST", "/v1/conversations", { kind: "group", members, name }); }
  members(id) { return this.call("GET", `/v1/conversations/${id}/members`); }
  acceptRequest(id) { return this.call("POST", `/v1/conversations/${id}/accept`); }
  declineRequest(id, block) { return this.call("POST", `/v1/conversations/${id}/decline`, { block }); }
  addMember(id, username) { return this.call("POST", `/v1/conversations/${id}/members`, { username }); }
  removeMember(id, username) {
    return this.call("DELETE", `/v1/conversations/${id}/members/${encodeURIComponent(username)}`);
  }
  // Through the device's socket when it is up (no HTTP request per message), else over HTTP.
  // Both are idempotent by clientMsgId, so a send the socket lost is retried over HTTP safely.
  async send(id, body, contentType, clientMsgId) {
    const message = { client_msg_id: clientMsgId, content_type: contentType, body: b64(body) };
    if (this.socket && this.socket.canSend()) {
      try {
        return await this.socket.sendMessage(id, message);
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 0) throw error;
      }
    }
    return this.call("POST", `/v1/conversations/${id}/messages`, message);
  }
  history(id, after) { return this.call("GET", `/v1/conversations/${id}/messages?after=${after}&limit=500`); }
  mark(id, read) { return this.call("POST", `/v1/conversations/${id}/receipts`, { read_seq: read }); }
  receipts(id) { return this.call("GET", `/v1/conversations/${id}/receipts`); }
  typing(id, on) { return this.call("POST", `/v1/conversations/${id}/typing`, { typing: on }); }
  publishKeys(keys) { return this.call("PUT", "/v1/keys/device", keys); }
  uploadPrekeys(prekeys) { return this.call("POST", "/v1/keys/one-time", { prekeys }); }
  prekeyCount() { return this.call("GET", "/v1/keys/count"); }
  userDevices(username) { return this.call("GET", `/v1/users/${encodeURIComponent(username)}/devices`); }
  conversationDevices(id) { return this.call("GET", `/v1/conversations/${id}/devices`); }
  claim(deviceIds) { return this.call("POST", "/v1/keys/claim", { device_ids: deviceIds }); }
  sendInbox(messages) {
    return this.call("POST", "/v1/inbox", { messages: messages.map(([d, body]) => ({ device_id: d, body: b64(body) })) });
  }
  inbox() { return this.call("GET", "/v1/inbox"); }
  startCall(conversationId, media) { return this.call("POST", "/v1/calls", { conversation_id: conversationId, media }); }
  openCalls() { return this.call("GET", "/v1/calls/open"); }
  getCall(callId) { return this.call("GET", `/v1/calls/${callId}`); }
  callStep(callId, step, body = {}) { return this.call("POST", `/v1/calls/${callId}/${step}`, body); }
  suggestReport(report) { return this.call("POST", "/v1/suggest/report", report); }
  ackInbox(upTo) { return this.call("POST", "/v1/inbox/ack", { up_to: upTo }); }
  attachmentUsage() { return this.call("GET", "/v1/blobs"); }
  createBlob(conversationId, size, chunkSize) {
    return this.call("POST", "/v1/blobs", { conversation_id: conversationId, size, chunk_size: chunkSize });
  }
  completeBlob(id) { return this.call("POST", `/v1/blobs/${id}/complete`); }
  deleteBlob(id) { return this.call("DELETE", `/v1/blobs/${id}`); }
  putChunk(id, n, bytes) { return this.raw("PUT", `/v1/blobs/${id}/chunks/${n}`, bytes); }
  blobContent(id) { return this.raw("GET", `/v1/blobs/${id}/content`); }
  myProfile() { return this.call("GET", "/v1/me/profile"); }
  setDisplayName(name) { return this.call("PUT", "/v1/me/profile", { display_name: name || null }); }
  setAvatar(file) { return this.raw("PUT", "/v1/me/avatar", file, "json"); }
  removeAvatar() { return this.call("DELETE", "/v1/me/avatar"); }
  profiles(usernames) { return this.call("POST", "/v1/profiles", { usernames }); }
  renameGroup(id, name) { return this.call("PATCH", `/v1/conversations/${id}`, { name }); }
  setGroupAvatar(id, file) { return this.raw("PUT", `/v1/conversations/${id}/avatar`, file, "json"); }
  removeGroupAvatar(id) { return this.call("DELETE", `/v1/conversations/${id}/avatar`); }

  // A request whose body or answer is bytes (attachment ciphertext, a picture), not JSON.
  async raw(method, path, bytes = undefined, answer = "bytes") {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (bytes !== undefined) headers["Content-Type"] = "application/octet-stream";
    let response;
    try {
      response = await fetch(this.base + path, { method, headers, body: bytes });
    } catch (error) {
      throw new ApiError(0, "offline", "cannot reach the server");
    }
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      const e = data && data.error;
      throw new ApiError(response.status, e ? e.code : "http_error", e ? e.message : response.statusText);
    }
    if (response.status === 204) return null;
    return answer === "json" ? response.json() : response.arrayBuffer();
  }
}

export async function allMessages(api, id) {
  const out = [];
  let after = 0;
  for (;;) {
    const page = await api.history(id, after);
    for (const e of page.events) {
      out.push(decodeEvent(e));
      after = e.seq;
    }
    if (!page.has_more) return out;
  }
}

export function decodeEvent(e) {
  return { ...e, body: unb64(e.body) };
}

// One WebSocket per device: authenticates in its first frame, resumes from its cursors, and
// reconnects with backoff. onEvent is awaited for each event, in order.
export class EventStream {
  constructor(base, token, cursors, onEvent, onStatus = () => {}) {
    this.url = base.replace(/^http/, "ws") + "/v1/events";
    this.token = token;
    this.cursors = { ...cursors };
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.closed = false;
    this.delay = 200;
    this.queue = Promise.resolve();
    this.ready = false;
    this.pending = new Map(); // client_msg_id -> {resolve, reject, timer} of sends on the socket
  }

  canSend() {
    return this.ready && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  // Resolves with {seq, created_at, ...} once the server has stored the message durably (the
  // "sent" frame), rejects with the server's refusal, or with status 0 if the socket went away.
  sendMessage(conversationId, message) {
    return new Promise((resolve, reject) => {
      const id = message.client_msg_id;
      const timer = setTimeout(() => this.settle(id, null, new ApiError(0, "timeout", "the server did not answer in time")), REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ type: "send", conversation_id: conversationId, ...message }));
    });
  }

  settle(id, value, error) {
    const waiting = this.pending.get(id);
    if (!waiting) return;
    this.pending.delete(id);
    clearTimeout(waiting.timer);
    if (error) waiting.reject(error); else waiting.resolve(value);
  }

  dropPending() {
    for (const id of [...this.pending.keys()]) this.settle(id, null, new ApiError(0, "offline", "cannot reach the server"));
  }

  start() {
    this.connect();
    return this;
  }

  connect() {
    if (this.closed) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", protocol: PROTOCOL, token: this.token, cursors: this.cursors }));
    ws.onmessage = (m) => {
      const event = JSON.parse(m.data);
      // Answers to sends are not events: they settle at once, ahead of the event queue.
      if (event.type === "sent") { this.settle(event.client_msg_id, event, null); return; }
      if (event.type === "error" && event.frame === "send") {
        this.settle(event.client_msg_id, null, new ApiError(event.status || 400, event.code, event.message, event.retry_after_s || 0));
        return;
      }
      this.queue = this.queue.then(() => this.handle(ws, event)).catch((e) => console.warn(e));
    };
    ws.onclose = (c) => {
      this.ready = false;
      this.dropPending();
      this.onStatus("offline", c.code);
      if (this.closed || c.code === 4401 || c.code === 4400) return;
      setTimeout(() => this.connect(), this.delay * (1 + Math.random()));
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  async handle(ws, event) {
    if (event.type === "message") {
      const last = this.cursors[event.conversation_id] || 0;
      if (event.seq <= last) return;
      this.cursors[event.conversation_id] = event.seq;
      await this.onEvent(decodeEvent(event));
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "ack", conversation_id: event.conversation_id, seq: event.seq }));
      }
      return;
    }
    if (event.type === "ready") {
      this.ready = true;
      this.delay = 200;
      this.onStatus("online");
    }
    if (event.type === "inbox") event.body = unb64(event.body);
    await this.onEvent(event);
    if (event.type === "inbox" && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "inbox_ack", up_to: event.id }));
    }
  }

  close() {
    this.closed = true;
    this.ready = false;
    this.dropPending();
    if (this.ws) this.ws.close();
  }
}
