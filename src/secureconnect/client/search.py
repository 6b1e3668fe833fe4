"""Search of what this device decrypted (issue 14), by the same rules as the web client's
``static/js/search.js``: words compared without case or diacritics, each query word as the
start of a word. The server holds ciphertext only and is never asked."""

from __future__ import annotations

import re
import unicodedata

_SPLIT = re.compile(r"[\W_]+")


def words(text: str) -> list[str]:
    stripped = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    plain = "".join(ch for ch in stripped if not unicodedata.combining(ch))
    return [w for w in _SPLIT.split(plain.lower()) if w]


def matches(text: str, query: str) -> bool:
    have = words(text)
    return all(any(w.startswith(q) for w in have) for q in words(query))
