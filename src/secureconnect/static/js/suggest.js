// Suggested replies, computed in this browser from the decrypted text (decision 0027). The
// same steps as secureconnect/suggest/engine.py, with integer arithmetic only, so that both
// clients show the same chips; tests/vectors/suggest.json holds them to it. No text leaves.

const KEEP = /^[a-z0-9]$/;
const JOINERS = new Set(["'", "\u2019"]);
export const LANGUAGES = ["en", "vi"];

export class PackError extends Error {}

export function fnv1a(text) {
  // Features are ASCII by construction, so a character is a byte.
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

export function normalise(text, fold) {
  const out = [];
  for (const ch of text.normalize("NFC").toLowerCase()) {
    if (Object.prototype.hasOwnProperty.call(fold, ch)) out.push(fold[ch]);
    else if (KEEP.test(ch)) out.push(ch);
    else if (JOINERS.has(ch)) continue;
    else if (ch === "?") out.push(" ? ");
    else out.push(" ");
  }
  return out.join("").split(/\s+/).filter(Boolean);
}

// The words of a message's first clause with words in it: what a chip would have said
// ("Yeah, it was great" answers yes). The same marks as engine.py's CLAUSE_BREAK.
export function firstClause(text, fold) {
  for (const clause of text.split(/[.!?,;:\n]+/)) {
    const tokens = normalise(clause, fold);
    if (tokens.length) return tokens;
  }
  return [];
}

// What the longest phrase the words start with stands for ("oh no" before "oh").
function longestPhrase(tokens, phrases) {
  for (let n = tokens.length; n > 0; n--) {
    const found = phrases.get(tokens.slice(0, n).join(" "));
    if (found !== undefined) return found;
  }
  return null;
}

// Phrases (arrays of words) by their first word, so that a message is checked only against the
// phrases that could start at each of its words.
function phraseIndex(texts) {
  const index = new Map();
  for (const text of texts) {
    const words = text.split(" ");
    if (!words[0]) throw new PackError("suggestion pack is malformed: an empty phrase");
    if (!index.has(words[0])) index.set(words[0], []);
    index.get(words[0]).push(words);
  }
  return index;
}

// A pack built before the list has none (nothing is news); anything else than a list of
// phrases is a malformed pack.
function newsPhrases(data, key) {
  const phrases = data[key] || [];
  if (!Array.isArray(phrases) || !phrases.every((p) => typeof p === "string")) throw new PackError(`suggestion pack is malformed: ${key.replace("_", " ")}`);
  return phraseIndex(phrases);
}

// Whether the words start with one of the phrases.
function startsWith(tokens, index) {
  const starting = tokens.length ? index.get(tokens[0]) || [] : [];
  return starting.some((phrase) => phrase.length <= tokens.length && phrase.every((p, j) => tokens[j] === p));
}

// Whether any of the phrases occurs in the words, whole words in a row.
function mentions(tokens, index) {
  for (let i = 0; i < tokens.length; i++) {
    for (const phrase of index.get(tokens[i]) || []) {
      if (i + phrase.length <= tokens.length && phrase.every((p, j) => tokens[i + j] === p)) return true;
    }
  }
  return false;
}

// Words and word pairs (with the start and the end), under `prefix`: none for the run's own,
// the pack's `answered` prefix for the message the run answers (decision 0027, pack 1.7.0).
export function wordFeatures(tokens, prefix = "") {
  const feats = tokens.map((t) => `${prefix}w ${t}`);
  const padded = ["<s>", ...tokens, "</s>"];
  for (let i = 0; i + 1 < padded.length; i++) feats.push(`${prefix}b ${padded[i]} ${padded[i + 1]}`);
  return feats;
}

export function features(tokens) {
  const feats = wordFeatures(tokens);
  for (const t of tokens) {
    if (t === "?") continue;
    const word = `<${t}>`;
    for (let i = 0; i + 3 <= word.length; i++) feats.push(`c ${word.slice(i, i + 3)}`);
  }
  return feats;
}

// The pack's non-zero weights: for each, in order of bucket * k + intent, the step from the
// previous one (unsigned LEB128) and the weight (one signed byte), in base64.
function decodeWeights(encoded, into) {
  if (encoded.encoding !== "delta-leb128-int8") throw new PackError(`suggestion pack weights encoding ${encoded.encoding} is unknown`);
  const raw = Uint8Array.from(atob(encoded.data), (c) => c.charCodeAt(0));
  let at = 0, position = -1, count = 0;
  while (at < raw.length) {
    let step = 0, scale = 1, byte;
    do { byte = raw[at++]; step += (byte & 0x7f) * scale; scale *= 128; } while (byte & 0x80);
    position += step;
    const w = raw[at++];
    if (position >= into.length) throw new PackError("suggestion pack is malformed: weights");
    into[position] = w > 127 ? w - 256 : w;
    count++;
  }
  if (count !== encoded.count) throw new PackError("suggestion pack weights are truncated");
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export class Pack {
  // `bytes`: the pack as served; `expected`: the hash the server's manifest names for it.
  static async load(bytes, expected) {
    const digest = await sha256Hex(bytes);
    if (expected && digest !== expected) throw new PackError(`suggestion pack hash is ${digest}, expected ${expected}`);
    let data;
    try { data = JSON.parse(new TextDecoder().decode(bytes)); } catch (e) { throw new PackError(`suggestion pack is malformed: ${e.message}`); }
    return new Pack(data, digest);
  }

  constructor(data, sha256) {
    if (data.format !== 1) throw new PackError(`suggestion pack format ${data.format} is not supported`);
    this.sha256 = sha256;
    this.version = data.version;
    this.fold = data.normalise.fold;
    this.buckets = data.features.buckets;
    this.maxTokens = data.features.max_tokens;
    // Each message's sum of weights is multiplied by norm[n] for its n distinct buckets, about
    // 1/sqrt(n) (decision 0027, pack 1.6.0); a pack built before it has none, and [1] adds the
    // weights as they are.
    this.norm = data.features.norm ?? [1];
    if (!Array.isArray(this.norm) || !this.norm.length || !this.norm.every((n) => Number.isInteger(n) && n >= 0)) {
      throw new PackError("suggestion pack is malformed: norm");
    }
    // The prefix of the features read from this person's own last message (pack 1.7.0); a pack
    // built before it reads the other person's run alone.
    this.answeredPrefix = data.features.answered ?? null;
    if (this.answeredPrefix !== null && (typeof this.answeredPrefix !== "string" || !this.answeredPrefix.trim())) {
      throw new PackError("suggestion pack is malformed: answered");
    }
    this.maxChars = data.limits.max_chars;
    this.maxWords = data.limits.max_words;
    this.speak = data.thresholds.speak;
    this.gap = data.thresholds.gap;
    this.oppositeGap = data.thresholds.opposite_gap;
    // Sympathy first after bad news (decision 0027, pack 1.3.0); a pack built before it has none.
    this.sympathyGap = data.thresholds.sympathy_gap ?? null;
    if (this.sympathyGap !== null && !Number.isInteger(this.sympathyGap)) throw new PackError("suggestion pack is malformed: sympathy_gap");
    this.sensitive = phraseIndex(data.sensitive);
    // Bad news (decision 0027, "No cheer at bad news") and good news (pack 1.4.0); a pack
    // built before them has none.
    this.badNews = newsPhrases(data, "bad_news");
    this.goodNews = newsPhrases(data, "good_news");
    // Saying no to one's own question (pack 1.9.0), yes to one about bad news (1.10.0); a pack
    // built before has none.
    this.negations = newsPhrases(data, "negations");
    this.negationIdioms = newsPhrases(data, "negation_idioms");
    this.affirmations = newsPhrases(data, "affirmations");
    this.viMarkers = new Set(data.language.vi_markers);
    this.enMarkers = new Set(data.language.en_markers);
    this.viLetters = new Set([...data.language.vi_letters]);
    this.intents = data.intents.map((i) => ({ id: i.id, replies: i.replies, opposite: i.opposite || null, mood: i.mood || null }));
    this.bias = data.bias;
    if (this.bias.length !== this.intents.length + 1) throw new PackError("suggestion pack is malformed: bias");
    this.byId = new Map(this.intents.map((i, n) => [i.id, n + 1]));
    // Dense and typed: a lookup per feature, no allocation while scoring.
    const k = this.bias.length;
    this.k = k;
    this.weights = new Int16Array(this.buckets * k);
    decodeWeights(data.weights, this.weights);
    // How this person answers (decision 0027); a pack built before it has none.
    const style = data.style || { window: 0, max_words: 0, phrases: [], bonus: [0] };
    this.styleWindow = style.window;
    this.styleMaxWords = style.max_words;
    this.styleBonus = style.bonus;
    if (!Array.isArray(style.phrases) || !style.phrases.every((x) => Array.isArray(x) && typeof x[0] === "string")) {
      throw new PackError("suggestion pack is malformed: style phrases");
    }
    this.stylePhrases = new Map(style.phrases.map(([p, i]) => [p, i]));
    if (!Number.isInteger(this.styleWindow) || this.styleWindow < 0 || !Number.isInteger(this.styleMaxWords)
      || !Array.isArray(this.styleBonus) || this.styleBonus.length !== this.styleWindow + 1
      || !this.styleBonus.every(Number.isInteger)) throw new PackError("suggestion pack is malformed: style");
    for (const i of this.stylePhrases.values()) if (!this.byId.has(i)) throw new PackError("suggestion pack is malformed: a phrase names no intent");
  }

  tokens(text) { return normalise(text, this.fold); }

  // What the model reads: the other person's run of messages, oldest first, ending with the one
  // to answer; its last maxTokens words.
  context(text, earlier = []) {
    return this.joined([...earlier, text].map((x) => this.tokens(x)));
  }

  // Words never span two messages, so the run's words are each message's, in order.
  joined(runs) { return runs.flat().slice(-this.maxTokens); }

  // The words of this person's own last message, the one the run answers; its last maxTokens.
  // Empty when the pack does not read it.
  answered(own) {
    if (!own.length || this.answeredPrefix === null) return [];
    return this.tokens(own[own.length - 1]).slice(-this.maxTokens);
  }

  // Index 0 is "no suggestion"; index n is intent n-1. `answered`: the words of the message the
  // run answers. The weights' sum is scaled by the number of distinct features, so that a long
  // message does not outweigh the bias by its length alone.
  scores(tokens, answered = []) {
    const k = this.k;
    const total = new Array(k).fill(0);
    const seen = new Set();
    const feats = features(tokens);
    if (answered.length && this.answeredPrefix !== null) feats.push(...wordFeatures(answered, this.answeredPrefix));
    for (const feat of feats) {
      const bucket = fnv1a(feat) & (this.buckets - 1);
      if (seen.has(bucket)) continue;
      seen.add(bucket);
      const base = bucket * k;
      for (let j = 0; j < k; j++) total[j] += this.weights[base + j];
    }
    const norm = this.norm[Math.min(seen.size, this.norm.length - 1)]; // the last entry holds beyond
    for (let j = 0; j < k; j++) total[j] = this.bias[j] + total[j] * norm;
    return total;
  }

  isSensitive(tokens) { return mentions(tokens, this.sensitive); }

  // A sick pet, a lost wallet, a failed exam: no cheerful chip ("Haha", "Cool!") then.
  isBadNews(tokens) { return mentions(tokens, this.badNews); }

  // The mood the other person's run sets: "-" after bad news, else "+" after good news ("I'm
  // engaged!", no "Oh no" under it), else null. Bad news wins a run that has both.
  news(runs) {
    if (runs.some((run) => this.isBadNews(run))) return "-";
    if (runs.some((run) => mentions(run, this.goodNews))) return "+";
    return null;
  }

  // What `answer`, the other person's first message after this person's own last one, says to
  // it in its first clause when it asked something: [whether it says no to a question not about
  // bad news ("did it work?", "nope": no cheerful chip then), the news it makes of a question
  // about bad news ("are you still sick?": "-" for "yeah", "+" for "no, all better", else
  // null)]. An idiom says no to nothing ("not bad", "không sao"); a "no" further on is not read.
  reply(answer, own) {
    const asked = own.length ? this.tokens(own[own.length - 1]) : [];
    if (!asked.includes("?")) return [false, null];
    const said = firstClause(answer, this.fold);
    const no = mentions(said, this.negations) && !mentions(said, this.negationIdioms);
    if (!this.isBadNews(asked)) return [no, null];
    if (!this.affirmations.size) return [false, null];
    if (startsWith(said, this.affirmations)) return [false, "-"];
    return [false, no ? "+" : null];
  }

  // The intent one of this person's own messages answered with, or null.
  answeredWith(text) {
    const tokens = firstClause(text, this.fold);
    if (!tokens.length || tokens.length > this.styleMaxWords) return null;
    return longestPhrase(tokens, this.stylePhrases);
  }

  // Scores leaning towards the intents this person has answered with lately.
  lean(s, own) {
    const recent = this.styleWindow ? own.slice(-this.styleWindow) : [];
    const used = new Map();
    for (const text of recent) {
      const i = this.answeredWith(text);
      if (i !== null) used.set(i, (used.get(i) || 0) + 1);
    }
    for (const [i, count] of used) s[this.byId.get(i)] += this.styleBonus[count];
    return s;
  }

  // Up to three chips for an incoming message: {suggestions: [{intent, text}], silent}.
  // `earlier`: what the same person sent just before it, nothing of ours between, oldest first;
  // `own`: what this person sent in the conversation, oldest first (the last one is read with
  // the run, the last few lean the chips towards how they answer).
  decide(text, lang, earlier = [], own = []) {
    if (!LANGUAGES.includes(lang)) throw new Error(`language is one of ${LANGUAGES.join(", ")}`);
    const runs = [...earlier, text].map((x) => this.tokens(x));  // each message normalised once
    const tokens = runs[runs.length - 1];
    if (!tokens.length) return { suggestions: [], silent: "empty" };
    const words = tokens.filter((t) => t !== "?");
    if ([...text].length > this.maxChars || words.length > this.maxWords) return { suggestions: [], silent: "long" };
    if (runs.some((run) => this.isSensitive(run))) return { suggestions: [], silent: "sensitive" };
    const base = this.scores(this.joined(runs), this.answered(own));
    // After bad news the cheerful intents are not offered at all, after good news the gloomy,
    // after a no to this person's question not the cheerful. The news is the run's, else what
    // its first message says to this person's question about bad news: a yes puts sympathy
    // first ("yeah" says nothing the scores could weigh).
    const [saidNo, toldByReply] = this.reply(earlier.length ? earlier[0] : text, own);
    const told = this.news(runs);
    const news = told || toldByReply;
    const confirmed = told === null && news === "-";
    const eligible = [];
    for (let j = 1; j < base.length; j++) {
      const mood = this.intents[j - 1].mood;
      if (!(news && mood !== null && mood !== news) && !(saidNo && mood === "+")) eligible.push(j);
    }
    // Whether to speak, and the first chip, are the call of the message and the one it answers;
    // the others lean towards how this person answers (a habit never puts "Yes" before "Bye!").
    if (!eligible.length) return { suggestions: [], silent: "unsure" };
    let top = eligible[0];
    for (const j of eligible) if (base[j] > base[top]) top = j;
    if (base[top] - base[0] < this.speak) return { suggestions: [], silent: "unsure" };
    // After bad news, sympathy leads when all but tied with the best ("Oh no" before "Really?"),
    // unless the message asks something: then the answer leads ("my car broke down, can you
    // pick me up?" gets "OK" first).
    if (news === "-" && this.sympathyGap !== null && !tokens.includes("?")) {
      let kindest = null;
      for (const j of eligible) if (this.intents[j - 1].mood === "-" && (kindest === null || base[j] > base[kindest])) kindest = j;
      if (kindest !== null && (confirmed || base[kindest] >= base[top] - this.sympathyGap)) top = kindest;
    }
    const s = this.lean(base.slice(), own);
    const rest = eligible.filter((j) => j !== top);
    rest.sort((a, b) => (s[b] - s[a]) || (a - b));
    const order = [top, ...rest];
    const chosen = [top];
    const opposite = this.intents[top - 1].opposite;
    if (opposite !== null) {
      const o = this.byId.get(opposite);
      if (eligible.includes(o) && s[o] >= s[top] - this.oppositeGap) chosen.push(o);
    }
    // Never "Oh no" beside "Congrats": a chip of the other mood than the best one is left out.
    const mood = this.intents[top - 1].mood;
    for (const j of order.slice(1)) {
      if (chosen.length === 3 || s[j] < s[top] - this.gap) break;
      const other = this.intents[j - 1].mood;
      if (!chosen.includes(j) && !(mood && other && other !== mood)) chosen.push(j);
    }
    const variant = fnv1a(`v ${tokens.join(" ")}`);
    const suggestions = chosen.map((j) => {
      const replies = this.intents[j - 1].replies[lang];
      return { intent: this.intents[j - 1].id, text: replies[variant % replies.length] };
    });
    return { suggestions, silent: null };
  }

  // The language this person writes in with this contact, else the interface's.
  language(ownTexts, fallback) {
    const votes = { en: 0, vi: 0 };
    for (const text of ownTexts) {
      const lowered = text.normalize("NFC").toLowerCase();
      if ([...lowered].some((ch) => this.viLetters.has(ch))) { votes.vi++; continue; }
      const tokens = this.tokens(text);
      const vi = tokens.filter((t) => this.viMarkers.has(t)).length;
      const en = tokens.filter((t) => this.enMarkers.has(t)).length;
      if (vi > en) votes.vi++;
      else if (en > vi) votes.en++;
    }
    if (votes.vi === votes.en) return LANGUAGES.includes(fallback) ? fallback : "en";
    return votes.vi > votes.en ? "vi" : "en";
  }
}

// The pack the server serves, checked against the hash its manifest names.
export async function fetchPack(fetcher = fetch) {
  const manifest = await (await fetcher("/v1/suggest")).json();
  const response = await fetcher(manifest.url);
  if (!response.ok) throw new PackError(`suggestion pack: HTTP ${response.status}`);
  return Pack.load(new Uint8Array(await response.arrayBuffer()), manifest.sha256);
}
