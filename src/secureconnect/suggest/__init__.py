"""Suggested replies that keep end-to-end encryption (issue 16, decision 0027).

A device computes them from the text it decrypted, with the pack shipped here (``pack.json``,
checked against ``pack.sha256``) and an engine that the web client repeats in
``static/js/suggest.js``. The server only hands the pack out and counts what clients report,
without text. The SDK's entry points::

    pack = Pack.packaged()
    pack.decide("thank you so much!", "en").suggestions   # (Suggestion("welcome", ...), ...)
    pack.decide(text, "en", earlier=their_run_before_it, own=my_texts_in_this_conversation)
    pack.language(my_recent_texts_to_them, fallback="en")
"""

from secureconnect.suggest.engine import Pack, PackError, Suggestion, Verdict

__all__ = ["Pack", "PackError", "Suggestion", "Verdict"]
