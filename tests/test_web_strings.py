"""The web client's interface text (static/js/i18n.js): every string in both languages, once.

A key written twice in one language's table is legal JavaScript, and the later one silently
wins: the call screen's "Mute" (the microphone) once showed the conversation's "Mute"
(notifications) in Vietnamese that way."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

I18N = Path(__file__).resolve().parents[1] / "src/secureconnect/static/js/i18n.js"
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`')
KEY = re.compile(r"(?:^|[{,])\s*([A-Za-z_]\w*)\s*:", re.MULTILINE)


def tables() -> dict[str, dict[str, list[str]]]:
    """Per table (STRINGS, ERRORS), per language, the keys in the order written."""
    source = STRING.sub('""', I18N.read_text())
    out: dict[str, dict[str, list[str]]] = {}
    for table in re.finditer(r"^const (\w+) = \{\n(.*?)^\};", source, re.MULTILINE | re.DOTALL):
        languages = re.finditer(r"^  (\w+): \{\n(.*?)^  \},?", table.group(2), re.M | re.S)
        out[table.group(1)] = {m.group(1): KEY.findall(m.group(2)) for m in languages}
    return out


def test_each_string_is_written_once_per_language_and_in_both() -> None:
    found = tables()
    assert set(found) == {"STRINGS", "ERRORS"}
    for name, languages in found.items():
        assert set(languages) == {"en", "vi"}, name
        for language, keys in languages.items():
            assert len(keys) > 10, (name, language)
            twice = [k for k, n in Counter(keys).items() if n > 1]
            assert twice == [], f"{name}.{language} has these keys twice: {twice}"
        assert set(languages["en"]) == set(languages["vi"]), (
            f"{name}: only in English {sorted(set(languages['en']) - set(languages['vi']))}, "
            f"only in Vietnamese {sorted(set(languages['vi']) - set(languages['en']))}"
        )
