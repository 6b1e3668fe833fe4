// Search of what this browser has decrypted: a word index kept in IndexedDB beside the device's
// keys, never on the server (which holds only ciphertext and must not be asked). Words are
// compared without case or diacritics, each query word as the start of a word ("luong" finds
// "lương"); the caller checks hits against the messages' current (edited, deleted) text.
import * as store from "./store.js";

export function words(text) {
  return String(text).normalize("NFD").replace(/\p{M}/gu, "").replace(/đ/g, "d").replace(/Đ/g, "D")
    .toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean);
}

export function matches(text, query) {
  const have = words(text);
  return words(query).every((q) => have.some((w) => w.startsWith(q)));
}

export class SearchIndex {
  constructor(owner) {
    this.key = `search:${owner}`;
    this.index = new Map();  // word -> Set of "conversation|seq"
    this.saving = null;
  }

  async load() {
    const saved = (await store.load(this.key)) || {};
    this.index = new Map(Object.entries(saved).map(([w, ids]) => [w, new Set(ids)]));
    return this;
  }

  add(conversationId, seq, text) {
    const id = `${conversationId}|${seq}`;
    for (const w of new Set(words(text))) {
      if (!this.index.has(w)) this.index.set(w, new Set());
      this.index.get(w).add(id);
    }
    this.save();
  }

  // Written a moment later, once for a burst of messages (history read on opening a chat).
  save() {
    clearTimeout(this.saving);
    this.saving = setTimeout(() => {
      const plain = Object.fromEntries([...this.index].map(([w, ids]) => [w, [...ids]]));
      store.save(this.key, plain).catch((e) => console.warn("search index not saved:", e.message));
    }, 500);
  }

  // [{conversation_id, seq}] of the messages holding every query word (as a word start).
  query(text) {
    let hits = null;
    for (const q of words(text)) {
      const found = new Set();
      for (const [w, ids] of this.index) if (w.startsWith(q)) for (const id of ids) found.add(id);
      hits = hits === null ? found : new Set([...hits].filter((id) => found.has(id)));
      if (!hits.size) break;
    }
    return [...(hits || [])].map((id) => {
      const [conversation_id, seq] = id.split("|");
      return { conversation_id, seq: Number(seq) };
    });
  }
}
