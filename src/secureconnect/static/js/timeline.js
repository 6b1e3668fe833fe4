// Replies, reactions, edits and deletions: end-to-end encrypted messages that refer to another
// by its seq. An attachment is an entry like a text, its caption the text (attachments.js). The same rules as secureconnect/client/timeline.py: a reaction is each person's
// latest one (remove takes it back); an edit or a deletion counts only from the message's own
// sender, within the server's edit_window_s; the latest edit wins; a deletion is for good.

import { ATTACHMENT, parse } from "./attachments.js";
import { utf8 } from "./crypto/primitives.js";

export const REACTION = "application/vnd.secureconnect.reaction+json";
export const EDIT = "application/vnd.secureconnect.edit+json";
export const DELETE = "application/vnd.secureconnect.delete+json";
export const EVENTS = [REACTION, EDIT, DELETE];
const MAX_EMOJI = 16;

export const isText = (m) => m.kind === "message" && !m.failed && typeof m.content_type === "string"
  && m.content_type.startsWith("text/") && typeof m.text === "string";

function payload(m) {
  try {
    const data = JSON.parse(m.text);
    return data && typeof data === "object" && Number.isInteger(data.to) ? data : null;
  } catch { return null; }
}

export const isAttachment = (m) => m.kind === "message" && !m.failed && m.content_type === ATTACHMENT
  && typeof m.text === "string";

// The pointer of an attachment message (null when malformed), read once per message.
const pointers = new WeakMap();
export function pointerOf(m) {
  if (!isAttachment(m)) return null;
  if (!pointers.has(m)) pointers.set(m, parse(utf8(m.text)));
  return pointers.get(m);
}

// Map seq -> {text, edited, deleted, reactions: Map(emoji -> [who]), attachment} for the text
// and attachment messages of a timeline (oldest first); events are not shown as messages.
export function fold(items, editWindowS) {
  const windowMs = editWindowS * 1000;
  const shown = new Map();
  const reacted = new Map();  // seq -> Map(sender -> [at, emoji | null])
  for (const m of items) {
    if (isText(m)) { shown.set(m.seq, { message: m, text: m.text, edited: false, deleted: false, reactions: new Map(), attachment: null }); continue; }
    if (isAttachment(m)) {
      const pointer = pointerOf(m);
      if (pointer) shown.set(m.seq, { message: m, text: pointer.caption, edited: false, deleted: false, reactions: new Map(), attachment: pointer });
      continue;
    }
    if (m.kind !== "message" || m.failed || !EVENTS.includes(m.content_type)) continue;
    const data = payload(m);
    const target = data && shown.get(data.to);
    if (!target) continue;
    if (m.content_type === REACTION) {
      const emoji = data.emoji;
      if (typeof emoji !== "string" || emoji.length === 0 || [...emoji].length > MAX_EMOJI) continue;
      if (!reacted.has(data.to)) reacted.set(data.to, new Map());
      reacted.get(data.to).set(m.sender, [m.seq, data.remove === true ? null : emoji]);
      continue;
    }
    const own = m.sender_id === target.message.sender_id;
    const timely = m.created_at - target.message.created_at <= windowMs;
    if (!own || !timely || target.deleted) continue;
    if (m.content_type === DELETE) Object.assign(target, { deleted: true, text: "", edited: false, attachment: null });
    else if (typeof data.text === "string" && data.text) Object.assign(target, { text: data.text, edited: true });
  }
  for (const [seq, bySender] of reacted) {
    const entry = shown.get(seq);
    for (const [who, [, emoji]] of [...bySender].sort((a, b) => a[1][0] - b[1][0])) {
      if (emoji !== null && !entry.deleted) {
        if (!entry.reactions.has(emoji)) entry.reactions.set(emoji, []);
        entry.reactions.get(emoji).push(who);
      }
    }
  }
  return shown;
}
