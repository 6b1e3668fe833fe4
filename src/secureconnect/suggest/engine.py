"""Suggested replies, computed on the device from the decrypted text (decision 0027).

The pack (``pack.json``) holds everything that decides an answer: the diacritics table, the
feature hash, integer weights, thresholds, the sensitive-topic list and the reply texts. This
module and ``static/js/suggest.js`` read it the same way, step for step, with integer
arithmetic only, so that the browser and the SDK show the same chips for the same message;
``tests/vectors/suggest.json`` holds them to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from secureconnect.errors import SecureConnectError

KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
JOINERS = frozenset("'\u2019")  # don't -> dont, as people type it either way
FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
LANGUAGES = ("en", "vi")
CLAUSE_BREAK = re.compile(r"[.!?,;:\n]+")  # static/js/suggest.js splits on the same marks


class PackError(SecureConnectError):
    """The suggestion pack is missing, altered (its hash does not match) or malformed: no
    suggestion is better than one from a pack nobody vouches for."""


def fnv1a(text: str) -> int:
    """FNV-1a, 32 bits, over the text's bytes (features are ASCII by construction)."""
    h = FNV_OFFSET
    for byte in text.encode():
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def normalise(text: str, fold: dict[str, str]) -> list[str]:
    """NFC, lower case, diacritics folded by the pack's own table (so "cảm ơn" and "cam on"
    are one message), anything else a separator; "?" stays, as a word, since it asks."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", text).lower():
        if ch in fold:
            out.append(fold[ch])
        elif ch in KEEP:
            out.append(ch)
        elif ch in JOINERS:
            continue
        elif ch == "?":
            out.append(" ? ")
        else:
            out.append(" ")
    return "".join(out).split()


def first_clause(text: str, fold: dict[str, str]) -> list[str]:
    """The words of a message's first clause with words in it: what a chip would have said
    ("Yeah, it was great" answers yes, "haha! no way" laughs)."""
    for clause in CLAUSE_BREAK.split(text):
        tokens = normalise(clause, fold)
        if tokens:
            return tokens
    return []


def longest_phrase(tokens: Sequence[str], phrases: dict[tuple[str, ...], str]) -> str | None:
    """What the longest phrase the words start with stands for ("oh no" before "oh")."""
    for n in range(len(tokens), 0, -1):
        found = phrases.get(tuple(tokens[:n]))
        if found is not None:
            return found
    return None


Phrases = dict[str, list[tuple[str, ...]]]  # phrases (tuples of words) by their first word


def _phrases(texts: Iterable[str]) -> Phrases:
    """Indexed by first word, so a message is checked against the phrases that could start at
    each of its words, not against every phrase at every word (a third of the time it took)."""
    index: Phrases = {}
    for text in texts:
        words = tuple(text.split())
        index.setdefault(words[0], []).append(words)  # no words: IndexError, a malformed pack
    return index


def _news_phrases(data: dict[str, Any], key: str) -> Phrases:
    """A pack built before the list has none (nothing is news); anything else than a list of
    phrases is a malformed pack, refused like any other."""
    phrases = data.get(key, [])
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise PackError(f"suggestion pack is malformed: {key.replace('_', ' ')}")
    return _phrases(phrases)


def _mentions(tokens: Sequence[str], phrases: Phrases) -> bool:
    """Whether any of the phrases occurs in the words, whole words in a row."""
    for i, token in enumerate(tokens):
        for phrase in phrases.get(token, ()):
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                return True
    return False


def _starts_with(tokens: Sequence[str], phrases: Phrases) -> bool:
    """Whether the words start with one of the phrases."""
    starting = phrases.get(tokens[0], ()) if tokens else ()
    return any(tuple(tokens[: len(phrase)]) == phrase for phrase in starting)


def word_features(tokens: Sequence[str], prefix: str = "") -> list[str]:
    """Words and word pairs (with the start and the end), under ``prefix``: none for the run's
    own, the pack's ``answered`` prefix for the message the run answers, this person's own last
    one ("sure" says little alone, and after "want to grab lunch tomorrow?" it is a yes to
    acknowledge; decision 0027, pack 1.7.0)."""
    padded = ["<s>", *tokens, "</s>"]
    return [f"{prefix}w {t}" for t in tokens] + [
        f"{prefix}b {a} {b}" for a, b in itertools.pairwise(padded)
    ]


def features(tokens: Sequence[str]) -> list[str]:
    """Words, word pairs (with the start and the end) and each word's letter triples."""
    feats = word_features(tokens)
    for t in tokens:
        if t == "?":
            continue
        word = f"<{t}>"
        feats += [f"c {word[i : i + 3]}" for i in range(len(word) - 2)]
    return feats


def decode_weights(encoded: dict[str, Any], k: int) -> dict[int, tuple[bytes, array[int]]]:
    """The non-zero weights, as the pack stores them compactly: for each, in order of
    ``bucket * k + intent``, the step from the previous one (unsigned LEB128) and the weight
    (one signed byte), all in base64."""
    if encoded["encoding"] != "delta-leb128-int8":
        raise PackError(f"suggestion pack weights encoding {encoded['encoding']} is unknown")
    raw = base64.b64decode(encoded["data"], validate=True)
    # Per bucket, its intents' indices and weights side by side: a few bytes each, where a
    # tuple per weight would hold the 400 KB pack in over 12 MB.
    intents: dict[int, bytearray] = {}
    values: dict[int, array[int]] = {}
    at, position, count = 0, -1, 0
    while at < len(raw):
        step = shift = 0
        while True:
            byte = raw[at]
            at += 1
            step |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        position += step
        w = raw[at] - 256 if raw[at] > 127 else raw[at]
        at += 1
        bucket = position // k
        intents.setdefault(bucket, bytearray()).append(position % k)
        values.setdefault(bucket, array("b")).append(w)
        count += 1
    if count != encoded["count"]:
        raise PackError("suggestion pack weights are truncated")
    return {bucket: (bytes(ks), values[bucket]) for bucket, ks in intents.items()}


def encode_weights(entries: Iterable[tuple[int, int]]) -> dict[str, Any]:
    """The inverse of :func:`decode_weights`, for the pack's builder: ``(bucket * k + intent,
    weight)`` in increasing order, each weight in -127..127 and not 0."""
    out = bytearray()
    previous, count = -1, 0
    for position, w in entries:
        step = position - previous
        if step <= 0 or not -127 <= w <= 127 or w == 0:
            raise ValueError("weights must be in increasing order, non-zero, within a byte")
        while True:
            byte = step & 0x7F
            step >>= 7
            out.append(byte | (0x80 if step else 0))
            if not step:
                break
        out.append(w & 0xFF)
        previous, count = position, count + 1
    return {
        "encoding": "delta-leb128-int8",
        "count": count,
        "data": base64.b64encode(bytes(out)).decode(),
    }


@dataclass(frozen=True)
class Intent:
    id: str
    replies: dict[str, tuple[str, ...]]
    opposite: str | None  # offered beside it when nearly as likely ("No" beside "Yes")
    mood: str | None  # "+" or "-": never beside a chip of the other mood


@dataclass(frozen=True)
class Suggestion:
    """One chip: the reply's text and the intent it stands for (for the metrics, never text)."""

    intent: str
    text: str


@dataclass(frozen=True)
class Verdict:
    """What the engine decided for a message: the chips, or why there are none."""

    suggestions: tuple[Suggestion, ...]
    silent: str | None  # None when it speaks; else "empty", "long", "sensitive", "unsure"


class Pack:
    """A loaded, verified suggestion pack."""

    def __init__(self, raw: bytes, expected_sha256: str | None = None) -> None:
        digest = hashlib.sha256(raw).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise PackError(f"suggestion pack hash is {digest}, expected {expected_sha256}")
        try:
            data: dict[str, Any] = json.loads(raw)
            if data["format"] != 1:
                raise PackError(f"suggestion pack format {data['format']} is not supported")
            self.sha256 = digest
            self.size = len(raw)
            self.version: str = data["version"]
            self.fold: dict[str, str] = data["normalise"]["fold"]
            self.buckets: int = data["features"]["buckets"]
            self.max_tokens: int = data["features"]["max_tokens"]
            # Each message's sum of weights is multiplied by norm[n] for its n distinct
            # buckets, about 1/sqrt(n) (decision 0027, pack 1.6.0); a pack built before it has
            # none, and [1] adds the weights as they are.
            self.norm: list[int] = data["features"].get("norm", [1])
            # The prefix of the features read from this person's own last message (pack
            # 1.7.0); a pack built before it reads the other person's run alone.
            self.answered_prefix: str | None = data["features"].get("answered")
            self.max_chars: int = data["limits"]["max_chars"]
            self.max_words: int = data["limits"]["max_words"]
            thresholds = data["thresholds"]
            self.speak: int = thresholds["speak"]
            self.gap: int = thresholds["gap"]
            self.opposite_gap: int = thresholds["opposite_gap"]
            # Sympathy first after bad news (decision 0027, pack 1.3.0); a pack built before
            # it has no such margin, and then the message's best leads as before.
            self.sympathy_gap: int | None = thresholds.get("sympathy_gap")
            if self.sympathy_gap is not None and type(self.sympathy_gap) is not int:
                raise PackError("suggestion pack is malformed: sympathy_gap")
            self.sensitive = _phrases(data["sensitive"])
            # Bad news (decision 0027, "No cheer at bad news") and good news (pack 1.4.0); a
            # pack built before them has none.
            self.bad_news = _news_phrases(data, "bad_news")
            self.good_news = _news_phrases(data, "good_news")
            # Saying no to one's own question (pack 1.9.0), yes to one about bad news (1.10.0);
            # a pack built before has none.
            self.negations = _news_phrases(data, "negations")
            self.negation_idioms = _news_phrases(data, "negation_idioms")
            self.affirmations = _news_phrases(data, "affirmations")
            self.vi_markers = frozenset(data["language"]["vi_markers"])
            self.en_markers = frozenset(data["language"]["en_markers"])
            self.vi_letters = frozenset(data["language"]["vi_letters"])
            self.intents = [
                Intent(
                    i["id"],
                    {lang: tuple(i["replies"][lang]) for lang in LANGUAGES},
                    i.get("opposite"),
                    i.get("mood"),
                )
                for i in data["intents"]
            ]
            self.bias: list[int] = data["bias"]
            self.weights = decode_weights(data["weights"], len(self.bias))
            # How this person answers (decision 0027, "Their own way of answering"); a pack
            # built before it has none, and then only the message decides.
            style = data.get("style") or {"window": 0, "max_words": 0, "phrases": [], "bonus": [0]}
            self.style_window: int = style["window"]
            self.style_max_words: int = style["max_words"]
            self.style_bonus: list[int] = style["bonus"]
            self.style_phrases = {tuple(p.split()): str(i) for p, i in style["phrases"]}
        except PackError:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            binascii.Error,
        ) as error:
            raise PackError(f"suggestion pack is malformed: {error!r}") from error
        if (
            len(self.bias) != len(self.intents) + 1
            or len(self.bias) > 256  # an intent's index is stored in a byte
            or self.buckets & (self.buckets - 1)
            or any(bucket >= self.buckets for bucket in self.weights)
        ):
            raise PackError("suggestion pack is malformed: bias or bucket count")
        if not (
            isinstance(self.norm, list)
            and self.norm
            and all(type(n) is int and n >= 0 for n in self.norm)
        ):
            raise PackError("suggestion pack is malformed: norm")
        if self.answered_prefix is not None and (
            not isinstance(self.answered_prefix, str) or not self.answered_prefix.strip()
        ):
            raise PackError("suggestion pack is malformed: answered")
        if (
            not all(type(n) is int for n in (self.style_window, self.style_max_words))
            or self.style_window < 0
            or len(self.style_bonus) != self.style_window + 1
            or not all(type(b) is int for b in self.style_bonus)
        ):
            raise PackError("suggestion pack is malformed: style")
        self.by_id = {intent.id: n + 1 for n, intent in enumerate(self.intents)}
        if any(i not in self.by_id for i in self.style_phrases.values()):
            raise PackError("suggestion pack is malformed: a phrase names no intent")

    @classmethod
    def packaged(cls) -> Pack:
        """The pack shipped in this package, checked against the hash shipped beside it."""
        folder = resources.files("secureconnect.suggest")
        try:
            raw = folder.joinpath("pack.json").read_bytes()
            expected = folder.joinpath("pack.sha256").read_text().split()[0]
        except (OSError, IndexError) as error:
            raise PackError(f"suggestion pack missing: {error}") from error
        return cls(raw, expected)

    @classmethod
    def from_file(cls, path: Path, expected_sha256: str | None = None) -> Pack:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise PackError(f"suggestion pack missing: {error}") from error
        return cls(raw, expected_sha256)

    # ----- deciding -------------------------------------------------------------------------

    def tokens(self, text: str) -> list[str]:
        return normalise(text, self.fold)

    def context(self, text: str, earlier: Sequence[str] = ()) -> list[str]:
        """What the model reads: the other person's run of messages, oldest first, ending with
        the one to answer; its last ``max_tokens`` words."""
        return self._context([self.tokens(t) for t in [*earlier, text]])

    def _context(self, runs: Sequence[list[str]]) -> list[str]:
        # Words never span two messages, so the run's words are each message's, in order.
        return [t for run in runs for t in run][-self.max_tokens :]

    def answered(self, own: Sequence[str]) -> list[str]:
        """The words of this person's own last message, the one the run answers; its last
        ``max_tokens``. Empty when the pack does not read it."""
        if not own or self.answered_prefix is None:
            return []
        return self.tokens(own[-1])[-self.max_tokens :]

    def scores(self, tokens: Sequence[str], answered: Sequence[str] = ()) -> list[int]:
        """Index 0 is "no suggestion"; index n is intent n-1. ``answered``: the words of the
        message the run answers (:meth:`answered`). The weights' sum is scaled by the number
        of distinct features, so that a long message does not outweigh the bias by its length
        alone."""
        total = [0] * len(self.bias)
        seen: set[int] = set()
        feats = features(tokens)
        if answered and self.answered_prefix is not None:
            feats += word_features(answered, self.answered_prefix)
        for feat in feats:
            bucket = fnv1a(feat) & (self.buckets - 1)
            if bucket in seen:
                continue
            seen.add(bucket)
            found = self.weights.get(bucket)
            if found is not None:
                for k, w in zip(*found, strict=True):
                    total[k] += w
        norm = self.norm[min(len(seen), len(self.norm) - 1)]  # the last entry holds beyond
        return [b + w * norm for b, w in zip(self.bias, total, strict=True)]

    def is_sensitive(self, tokens: Sequence[str]) -> bool:
        return _mentions(tokens, self.sensitive)

    def is_bad_news(self, tokens: Sequence[str]) -> bool:
        """A sick pet, a lost wallet, a failed exam: no cheerful chip ("Haha", "Cool!") then."""
        return _mentions(tokens, self.bad_news)

    def news(self, runs: Sequence[Sequence[str]]) -> str | None:
        """The mood the other person's run of messages sets: "-" when any of them mentions
        bad news, else "+" when one mentions good news ("I'm engaged!", no "Oh no" under it),
        else None. Bad news wins: "I passed, but my dog is sick" still gets sympathy."""
        if any(self.is_bad_news(run) for run in runs):
            return "-"
        if any(_mentions(run, self.good_news) for run in runs):
            return "+"
        return None

    def _moods(
        self, runs: Sequence[Sequence[str]], earlier: Sequence[str], text: str, own: Sequence[str]
    ) -> tuple[str | None, bool, bool]:
        """The news (:meth:`news`, else what the run's first message says to this person's
        question about bad news), whether it is a yes to such a question (sympathy leads
        then, as "yeah" says nothing the scores could weigh), and whether the run's first
        message said no to a question (:meth:`reply`)."""
        said_no, told_by_reply = self.reply(earlier[0] if earlier else text, own)
        told = self.news(runs)
        news = told or told_by_reply
        return news, told is None and news == "-", said_no

    def reply(self, answer: str, own: Sequence[str]) -> tuple[bool, str | None]:
        """What ``answer``, the other person's first message after this person's own last one,
        says to it in its first clause when it asked something (a "?"):

        - whether it says no to a question not about bad news: "did it work?", "nope"; "ăn
          cơm chưa?", "chưa". Nothing there need be bad news, but a cheerful chip ("Cool!")
          would read as glad of the no (pack 1.9.0);
        - the news it makes of a question about bad news, whose words are then the news and
          the answer's none: "-" for a first clause starting with a yes ("are you still
          sick?", "yeah"; "con vẫn bị sốt à?", "vâng"), "+" for a no ("did you miss your
          flight?", "no, made it"), else None (pack 1.10.0; a pack without its affirmations
          makes no news).

        An idiom says no to nothing ("not bad", "không sao"), and a "no" further on is not
        read ("yes! I didn't think I'd get it")."""
        asked = self.tokens(own[-1]) if own else []
        if "?" not in asked:
            return False, None
        said = first_clause(answer, self.fold)
        no = _mentions(said, self.negations) and not _mentions(said, self.negation_idioms)
        if not self.is_bad_news(asked):
            return no, None
        if not self.affirmations:
            return False, None
        if _starts_with(said, self.affirmations):
            return False, "-"
        return False, "+" if no else None

    def said_no(self, answer: str, own: Sequence[str]) -> bool:
        """Whether ``answer`` says no to this person's question (:meth:`reply`)."""
        return self.reply(answer, own)[0]

    def reply_to_bad_news(self, answer: str, own: Sequence[str]) -> str | None:
        """The news ``answer`` makes of this person's question about bad news (:meth:`reply`)."""
        return self.reply(answer, own)[1]

    def answered_with(self, text: str) -> str | None:
        """The intent one of this person's own messages answered with, if any."""
        tokens = first_clause(text, self.fold)
        if not tokens or len(tokens) > self.style_max_words:
            return None
        return longest_phrase(tokens, self.style_phrases)

    def _lean(self, s: list[int], own: Sequence[str]) -> list[int]:
        """Scores leaning towards the intents this person has answered with lately: one who
        says "lol" sees "Lol" sooner than one who says "yes"."""
        recent = own[-self.style_window :] if self.style_window else ()
        used = Counter(i for i in map(self.answered_with, recent) if i is not None)
        for intent, count in used.items():
            s[self.by_id[intent]] += self.style_bonus[count]
        return s

    def _eligible(self, news: str | None, said_no: bool) -> list[int]:
        """The intents that may be offered: all but those of the other mood than the news
        (no "Haha" after bad news, no "Oh no" after good news), and no cheerful one when the
        run said no to this person's question."""
        out = []
        for k in range(1, len(self.intents) + 1):
            mood = self.intents[k - 1].mood
            if not (news and mood not in (None, news)) and not (said_no and mood == "+"):
                out.append(k)
        return out

    def _order(
        self,
        s: list[int],
        own: Sequence[str],
        eligible: Sequence[int],
        news: str | None,
        asked: bool,
        confirmed: bool,
    ) -> tuple[list[int], list[int]]:
        """The eligible intents, best first, and the scores that ordered them: the message's own
        best leads (a habit never puts "Yes" before "Bye!"), the rest lean towards this person.
        After bad news, sympathy leads when all but tied with the best: "Oh no, I'm sorry"
        before "Really?" (decision 0027), unless the message ``asked`` something: then the
        answer leads ("my car broke down, can you pick me up?" gets "OK" first). After bad
        news ``confirmed`` by a yes to this person's question, sympathy leads whatever the
        scores say."""
        top = min(eligible, key=lambda k: (-s[k], k))
        if news == "-" and self.sympathy_gap is not None and not asked:
            gloomy = [k for k in eligible if self.intents[k - 1].mood == "-"]
            kindest = min(gloomy, key=lambda k: (-s[k], k), default=top)
            if confirmed or s[kindest] >= s[top] - self.sympathy_gap:
                top = kindest
        leaned = self._lean(list(s), own)
        rest = sorted((k for k in eligible if k != top), key=lambda k: (-leaned[k], k))
        return [top, *rest], leaned

    def ranked(self, text: str, earlier: Sequence[str] = (), own: Sequence[str] = ()) -> list[str]:
        """The intents that may be offered, best first, ignoring when to stay silent (for
        measuring only)."""
        runs = [self.tokens(t) for t in [*earlier, text]]
        news, confirmed, said_no = self._moods(runs, earlier, text, own)
        s = self.scores(self._context(runs), self.answered(own))
        eligible = self._eligible(news, said_no)
        order, _ = self._order(s, own, eligible, news, "?" in runs[-1], confirmed)
        return [self.intents[k - 1].id for k in order]

    def decide(
        self, text: str, lang: str, earlier: Sequence[str] = (), own: Sequence[str] = ()
    ) -> Verdict:
        """Up to three chips, in ``lang`` ("en" or "vi"), for an incoming message ``text``;
        ``earlier``: the messages the same person sent just before it, with nothing of ours in
        between (a thought split over several messages), oldest first; ``own``: what this
        person sent in the conversation, oldest first (the last one is read with the run, the
        last few lean the chips towards how they answer)."""
        if lang not in LANGUAGES:
            raise ValueError(f"language is one of {', '.join(LANGUAGES)}")
        runs = [self.tokens(t) for t in [*earlier, text]]  # each message normalised once
        tokens = runs[-1]
        if not tokens:
            return Verdict((), "empty")
        words = [t for t in tokens if t != "?"]
        if len(text) > self.max_chars or len(words) > self.max_words:
            return Verdict((), "long")
        if any(self.is_sensitive(run) for run in runs):
            return Verdict((), "sensitive")
        base = self.scores(self._context(runs), self.answered(own))
        news, confirmed, said_no = self._moods(runs, earlier, text, own)
        eligible = self._eligible(news, said_no)
        # Whether to speak, and the first chip, are the call of the message and the one it
        # answers; the others lean towards how this person answers.
        if not eligible or max(base[k] for k in eligible) - base[0] < self.speak:
            return Verdict((), "unsure")
        order, s = self._order(base, own, eligible, news, "?" in tokens, confirmed)
        top = order[0]
        chosen = [top]
        opposite = self.intents[top - 1].opposite
        if opposite is not None:
            o = self.by_id[opposite]
            if o in eligible and s[o] >= s[top] - self.opposite_gap:
                chosen.append(o)
        mood = self.intents[top - 1].mood
        for k in order[1:]:
            if len(chosen) == 3 or s[k] < s[top] - self.gap:
                break
            other = self.intents[k - 1].mood
            if k not in chosen and not (mood and other and other != mood):
                chosen.append(k)
        variant = fnv1a("v " + " ".join(tokens))
        out = []
        for k in chosen:
            replies = self.intents[k - 1].replies[lang]
            out.append(Suggestion(self.intents[k - 1].id, replies[variant % len(replies)]))
        return Verdict(tuple(out), None)

    def language(self, own_texts: Iterable[str], fallback: str) -> str:
        """The language this person writes in with this contact (their last few messages),
        else ``fallback`` (the interface's language)."""
        votes = {"en": 0, "vi": 0}
        for text in own_texts:
            lowered = unicodedata.normalize("NFC", text).lower()
            if any(ch in self.vi_letters for ch in lowered):
                votes["vi"] += 1
                continue
            tokens = self.tokens(text)
            vi = sum(t in self.vi_markers for t in tokens)
            en = sum(t in self.en_markers for t in tokens)
            if vi > en:
                votes["vi"] += 1
            elif en > vi:
                votes["en"] += 1
        if votes["vi"] == votes["en"]:
            return fallback if fallback in LANGUAGES else "en"
        return "vi" if votes["vi"] > votes["en"] else "en"
