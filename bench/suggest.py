"""How good and how fast the suggested replies are (issue 16, decision 0027).

Quality, on conversations the pack was not built from:
- English: the held-out fifth of chitchat-dataset (split by conversation, ``corpus.split_of``);
- Vietnamese: tests/suggest/vi_pairs.tsv, written for measuring only.
For each incoming message the real reply either falls in one of the pack's intents (coverage)
or not. The engine reads the message (with the sender's run of messages before it) and the
replier's own earlier messages in the conversation, as the clients do. On covered pairs:
recall@1, recall@3 and MRR of the chips as shown (silence is a miss), and of the full
ranking; how often it stays silent; how often, when it speaks, a chip is what the person really
answered. Beside it, the reference: a frequency-only baseline that always
shows the three intents most often replied in the training part.

Whether the chips make sense to a person, which chitchat's strangers do not tell (they answer
"haha" to nearly anything): tests/suggest/{en,vi}_sense.tsv give messages and the intents a
person would accept, tests/suggest/{en,vi}_work.tsv the same for an organisation's work
chat, and tests/suggest/{en,vi}_exchanges.tsv for answers to one's own message ("did you
eat?", "not yet"), read with it as the clients do; how often the first chip is one of them, how
many chips are not, and how often a cheerful chip follows bad news or a gloomy one good news.

Speed: per-message time in Python and in Chromium (the web client's own suggest.js), called as
the clients call it (with the sender's run before the message and the replier's own messages),
each with its ratio to a reference measured in the same run (normalising and splitting the same
text, the least any text feature costs); the pack's size and the memory a loaded pack holds.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/suggest.py [--messages 2000] [--no-browser]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import statistics
import sys
import threading
import time
import tracemalloc
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.suggest_pack.corpus import (
    SENSE,
    Acceptable,
    Matcher,
    Pair,
    acceptable,
    chitchat_pairs,
    load_intents,
    vi_pairs,
)

from secureconnect.suggest.engine import Pack

STATIC = Path(__file__).parents[1] / "src" / "secureconnect" / "static"
PACK = Path(__file__).parents[1] / "src" / "secureconnect" / "suggest" / "pack.json"
T = TypeVar("T")
Call = tuple[str, list[str], list[str]]  # a message, the sender's run before it, one's own


def quality(
    pack: Pack, pairs: list[Pair], lang: str, matcher: Matcher, baseline: list[str]
) -> dict[str, float]:
    covered = hits1 = hits3 = ranked3 = unleaned3 = 0
    rr = ranked_rr = base3 = base_rr = 0.0
    silent = speaks = speak_hits = 0
    for pair in pairs:
        truth = matcher(pair.reply, lang)
        verdict = pack.decide(pair.message, lang, pair.earlier, pair.own)
        shown = [s.intent for s in verdict.suggestions]
        if verdict.silent:
            silent += 1
        else:
            speaks += 1
            speak_hits += truth in shown
        if truth is None:
            continue
        covered += 1
        if truth in shown:
            rank = shown.index(truth) + 1
            hits1 += rank == 1
            hits3 += 1
            rr += 1 / rank
        # After bad news the cheerful intents are not offered at all, so not ranked either.
        ranking = pack.ranked(pair.message, pair.earlier, pair.own)
        if truth in ranking:
            rank = ranking.index(truth) + 1
            ranked3 += rank <= 3
            ranked_rr += 1 / rank
        unleaned3 += truth in pack.ranked(pair.message, pair.earlier)[:3]
        if truth in baseline:
            base3 += 1
            base_rr += 1 / (baseline.index(truth) + 1)
    n = max(1, covered)
    return {
        "pairs": len(pairs),
        "coverage": covered / max(1, len(pairs)),
        "recall@1": hits1 / n,
        "recall@3": hits3 / n,
        "mrr": rr / n,
        "ranked recall@3": ranked3 / n,
        "ranked mrr": ranked_rr / n,
        "ranked recall@3, message only": unleaned3 / n,
        "silent": silent / max(1, len(pairs)),
        "precision when shown": speak_hits / max(1, speaks),
        "baseline recall@3": base3 / n,
        "baseline mrr": base_rr / n,
    }


def sense(pack: Pack, cases: list[Acceptable], lang: str) -> dict[str, float]:
    """How often the chips are ones a person would accept: the first, and all of them; and the
    worst misses, a cheerful chip after bad news or a gloomy one after good news (a message is
    bad news when every mood among its acceptable intents is "-")."""
    mood = {intent.id: intent.mood for intent in pack.intents}
    first = chips = off = cheer = gloom = silent = 0
    for case in cases:
        own = [case.answered] if case.answered else []
        shown = [s.intent for s in pack.decide(case.message, lang, own=own).suggestions]
        if not shown:
            silent += 1
            continue
        first += shown[0] in case.intents
        chips += len(shown)
        off += sum(i not in case.intents for i in shown)
        moods = {mood[i] for i in case.intents} - {None}
        cheer += moods == {"-"} and any(mood[i] == "+" for i in shown)
        gloom += moods == {"+"} and any(mood[i] == "-" for i in shown)
    n = max(1, len(cases))
    return {
        "messages": len(cases),
        "silent": silent,
        "first acceptable": first / n,
        "chips off": off / max(1, chips),
        "cheer after bad news": cheer,
        "gloom after good news": gloom,
    }


def per_message_us(fn: Callable[[T], object], items: list[T], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1e6


def reference(text: str) -> list[str]:
    return unicodedata.normalize("NFC", text).lower().split()


async def browser_speed(calls: list[Call]) -> dict[str, float]:
    from playwright.async_api import async_playwright

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(STATIC))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--enable-precise-memory-info",
        "--js-flags=--expose-gc",
    ]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
            page = await browser.new_page()
            await page.goto(url + "/index.html")
            pack_text = PACK.read_text()
            result: dict[str, float] = await page.evaluate(
                """async ([packText, calls]) => {
                  const S = await import("/js/suggest.js");
                  gc();
                  const before = performance.memory.usedJSHeapSize;
                  const pack = new S.Pack(JSON.parse(packText), "");
                  gc();
                  const held = performance.memory.usedJSHeapSize - before;
                  const time = (fn) => {
                    let best = Infinity;
                    for (let r = 0; r < 3; r++) {
                      const t0 = performance.now();
                      for (const c of calls) fn(c);
                      best = Math.min(best, (performance.now() - t0) / calls.length);
                    }
                    return best * 1000;
                  };
                  const decide = time(([t, earlier, own]) => pack.decide(t, "en", earlier, own));
                  const ref = time(([t]) => t.normalize("NFC").toLowerCase().split(" "));
                  return { decide_us: decide, reference_us: ref, heap_kib: held / 1024 };
                }""",
                [pack_text, calls],
            )
            await browser.close()
            return result
    finally:
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages timed for speed")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timing")
    args = parser.parse_args()

    tracemalloc.start()
    pack = Pack.packaged()
    pack_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    intents = load_intents()["intents"]
    matcher = Matcher(intents)  # type: ignore[arg-type]
    frequency = Counter(matcher(p.reply, "en") for p in chitchat_pairs("train"))
    frequency.pop(None, None)
    baseline = [name for name, _ in frequency.most_common(3) if name]
    print(
        f"pack {pack.version}: {pack.size / 1024:.0f} KiB on disk, sha256 {pack.sha256[:16]}…, "
        f"{len(pack.intents)} intents; frequency baseline shows {', '.join(baseline)}"
    )

    english = list(chitchat_pairs("test"))
    vietnamese = vi_pairs()
    rows = {
        "en (chitchat, held out)": quality(pack, english, "en", matcher, baseline),
        "vi (tests/suggest)": quality(pack, vietnamese, "vi", matcher, baseline),
    }
    print()
    print(f"{'':26}" + "".join(f"{k:>12}" for k in ("pairs", "coverage", "silent", "prec.shown")))
    for name, q in rows.items():
        print(
            f"{name:26}{q['pairs']:>12.0f}{q['coverage']:>12.3f}{q['silent']:>12.3f}"
            f"{q['precision when shown']:>12.3f}"
        )
    print()
    print(
        f"{'on covered pairs':26}"
        + "".join(
            f"{k:>12}"
            for k in ("r@1", "r@3", "mrr", "ranked r@3", "base r@3", "r@3-base", "ranked-base")
        )
    )
    for name, q in rows.items():
        print(
            f"{name:26}{q['recall@1']:>12.3f}{q['recall@3']:>12.3f}{q['mrr']:>12.3f}"
            f"{q['ranked recall@3']:>12.3f}{q['baseline recall@3']:>12.3f}"
            f"{q['recall@3'] - q['baseline recall@3']:>+12.3f}"
            f"{q['ranked recall@3'] - q['baseline recall@3']:>+12.3f}"
        )
    print()
    for name, q in rows.items():
        alone = q["ranked recall@3, message only"]
        print(
            f"{name:26}ranked r@3 from the message alone {alone:.3f}; the person's own "
            f"messages (the one answered, and how they answer) add "
            f"{q['ranked recall@3'] - alone:+.3f}"
        )

    print()
    print("whether the chips make sense (messages, and the intents a person would accept)")
    for lang, paths in SENSE.items():
        for name, path in paths.items():
            q = sense(pack, acceptable(path), lang)
            print(
                f"{lang} {name:13}{q['messages']:>4.0f} messages: first chip acceptable "
                f"{q['first acceptable']:.2f}, chips off {q['chips off']:.2f}, cheerful chip "
                f"after bad news {q['cheer after bad news']:.0f}, gloomy after good news "
                f"{q['gloom after good news']:.0f}, silent {q['silent']:.0f}"
            )

    calls = [(p.message, list(p.earlier), list(p.own)) for p in english[: args.messages]]
    engine_us = per_message_us(lambda c: pack.decide(c[0], "en", c[1], c[2]), calls)
    ref_us = per_message_us(lambda c: reference(c[0]), calls)
    print()
    print(
        f"python:   {engine_us:8.1f} µs a message (reference {ref_us:.1f} µs, ratio "
        f"{engine_us / ref_us:.0f}x); loaded pack holds {pack_bytes / 2**20:.1f} MiB"
    )
    if not args.no_browser:
        b = asyncio.run(browser_speed(calls))
        print(
            f"chromium: {b['decide_us']:8.1f} µs a message "
            f"(reference {b['reference_us']:.1f} µs, "
            f"ratio {b['decide_us'] / max(b['reference_us'], 1e-3):.0f}x); loaded pack holds "
            f"{b['heap_kib'] / 1024:.1f} MiB of JS heap"
        )
    singles = [
        per_message_us(lambda c: pack.decide(c[0], "en", c[1], c[2]), [c], 1) for c in calls[:300]
    ]
    print(
        f"goal: under 5,000 µs a message; single messages p50 {statistics.median(singles):.1f} "
        f"µs, max {max(singles):.1f} µs"
    )


if __name__ == "__main__":
    main()
