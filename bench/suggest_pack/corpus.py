"""What the suggestion pack is built from and measured on (decision 0027).

- ``chitchat-dataset`` (PyPI, MIT): English conversations, split by conversation with a hash of
  its id, so that the held-out fifth is never seen while building the pack;
- ``tests/suggest/vi_pairs.tsv``: Vietnamese message -> reply pairs written for measuring only;
- a real reply "falls in" an intent when its first clause, normalised, starts with one of the
  intent's ``matches`` (the longest wins) and is at most ``MAX_CLAUSE`` words long: the same
  test the engine applies to a person's own messages (``Pack.answered_with``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from secureconnect.suggest.engine import first_clause, longest_phrase, normalise

HERE = Path(__file__).parent
INTENTS = HERE / "intents.json"
VI_PAIRS = HERE.parents[1] / "tests" / "suggest" / "vi_pairs.tsv"
# Whether the chips make sense: messages and the intents a person would accept (decision 0027),
# per language: the held-out test set, its work chat (written before the pack's work examples),
# answers to one's own message (written before anything was measured on them), and the sets
# that chose the pack's settings.
SENSE = {
    lang: {
        "test": HERE.parents[1] / "tests" / "suggest" / f"{lang}_sense.tsv",
        "work test": HERE.parents[1] / "tests" / "suggest" / f"{lang}_work.tsv",
        "exchanges": HERE.parents[1] / "tests" / "suggest" / f"{lang}_exchanges.tsv",
        "validation": HERE / f"{lang}_sense_validation.tsv",
        "exch. valid.": HERE / f"{lang}_exchanges_validation.tsv",
    }
    for lang in ("en", "vi")
}
MAX_CLAUSE = 8
OWN = 20  # how many of the replier's earlier messages a pair keeps
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1

# The diacritics table both implementations use (it travels in the pack): Vietnamese's letters
# with their tone marks, and the Latin letters people type in English chat.
_FOLD_GROUPS = {
    "a": "àáảãạăằắẳẵặâầấẩẫậäåāą",
    "c": "çćč",
    "d": "đ",
    "e": "èéẻẽẹêềếểễệëēėę",
    "i": "ìíỉĩịîïī",
    "n": "ñń",
    "o": "òóỏõọôồốổỗộơờớởỡợöøō",
    "u": "ùúủũụưừứửữựûüū",
    "y": "ỳýỷỹỵÿ",
    "s": "śš",
    "z": "žźż",
    "l": "ł",
}
FOLD = {ch: base for base, chars in _FOLD_GROUPS.items() for ch in chars}
# Letters only Vietnamese writes: one of them in a message says the person writes Vietnamese.
VI_LETTERS = "ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ"


@dataclass(frozen=True)
class Pair:
    message: str
    reply: str
    conversation: str
    earlier: tuple[str, ...] = ()  # the same person's messages just before ``message``
    own: tuple[str, ...] = ()  # what the one who replies sent before, oldest first

    @property
    def context(self) -> str:
        """The text the model reads, as ``Pack.context`` joins it."""
        return " \n ".join([*self.earlier, self.message])

    @property
    def answered(self) -> str:
        """The replier's own last message, which the model reads with the run (pack 1.7.0)."""
        return self.own[-1] if self.own else ""


def split_of(conversation_id: str) -> str:
    """ "test", "validation" or "train", fixed by the conversation's id."""
    x = int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) / 2**32
    if x < TEST_FRACTION:
        return "test"
    return "validation" if x < TEST_FRACTION + VALIDATION_FRACTION else "train"


def chitchat_pairs(split: str) -> Iterator[Pair]:
    """Each turn's last line (with the turn's earlier lines), answered by the next turn's first
    line (the other person's)."""
    import chitchat_dataset  # the bench extra

    path = Path(chitchat_dataset.__file__).parent / "dataset.json"
    data = json.loads(path.read_text())
    for conv_id, conv in data.items():
        if split_of(conv_id) != split:
            continue
        turns = conv["messages"]
        sent: dict[str, list[str]] = {}  # each person's messages so far
        for before, after in itertools.pairwise(turns):
            for line in before:
                sent.setdefault(line["sender"], []).append(line["text"])
            if not before or not after or before[-1]["sender"] == after[0]["sender"]:
                continue
            earlier = tuple(u["text"] for u in before[:-1])
            own = tuple(sent.get(after[0]["sender"], [])[-OWN:])
            yield Pair(before[-1]["text"], after[0]["text"], conv_id, earlier, own)


def vi_pairs() -> list[Pair]:
    pairs = []
    for n, line in enumerate(VI_PAIRS.read_text().splitlines()):
        if not line.strip() or line.startswith("#"):
            continue
        message, reply = line.split("\t")
        pairs.append(Pair(message, reply, f"vi-{n}"))
    return pairs


@dataclass(frozen=True)
class Acceptable:
    message: str
    intents: frozenset[str]  # any other chip is "off"
    answered: str = ""  # one's own message that ``message`` answers, if any


def acceptable(path: Path) -> list[Acceptable]:
    """A sense file's lines: message<TAB>intents, or own message<TAB>answer<TAB>intents."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        *answered, message, intents = line.split("\t")
        own = answered[0] if answered else ""
        out.append(Acceptable(message, frozenset(intents.split(",")), own))
    return out


class Matcher:
    """Which intent a real reply falls in, if any."""

    def __init__(self, intents: list[dict[str, object]]) -> None:
        self.patterns: dict[str, dict[tuple[str, ...], str]] = {"en": {}, "vi": {}}
        for intent in intents:
            matches = intent["matches"]
            assert isinstance(matches, dict)
            for lang, phrases in matches.items():
                for phrase in phrases:
                    key = tuple(t for t in normalise(phrase, FOLD) if t != "?")
                    self.patterns[lang].setdefault(key, str(intent["id"]))
        # A person's own message counts in whichever language it is written (Pack.answered_with).
        self.patterns["any"] = {**self.patterns["vi"], **self.patterns["en"]}

    def __call__(self, reply: str, lang: str) -> str | None:
        tokens = first_clause(reply, FOLD)
        if not tokens or len(tokens) > MAX_CLAUSE:
            return None
        return longest_phrase(tokens, self.patterns[lang])


def load_intents() -> dict[str, object]:
    data: dict[str, object] = json.loads(INTENTS.read_text())
    return data
