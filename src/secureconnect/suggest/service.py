"""The suggestion pack as this server keeps and serves it, and what clients report of it.

The server never suggests anything itself: it hands out the pack (a static asset, checked
against its hash on both ends) and counts what clients tell it without text (decision 0027)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from secureconnect.errors import Invalid, NotFound, Unavailable
from secureconnect.ops.metrics import Metrics
from secureconnect.suggest.engine import Pack, PackError
from secureconnect.suggest.schemas import SuggestCheck, SuggestManifest, SuggestReport

log = logging.getLogger("secureconnect.suggest")
RECHECK_S = 10.0
POSITIONS = (1, 2, 3)


class SuggestService:
    def __init__(self, folder: Path, metrics: Metrics) -> None:
        """``folder`` holds ``pack.json`` and ``pack.sha256`` (the package's own by default)."""
        self.folder = folder
        self.metrics = metrics
        self._raw: bytes | None = None
        self._pack: Pack | None = None
        self._checked: tuple[float, SuggestCheck] | None = None
        metrics.watch_suggest(lambda: self.check().ok)

    def _load(self) -> SuggestCheck:
        try:
            raw = (self.folder / "pack.json").read_bytes()
            expected = (self.folder / "pack.sha256").read_text().split()[0]
        except (OSError, IndexError) as error:
            return SuggestCheck(ok=False, detail=f"pack missing: {error}")
        if self._raw is not None and raw == self._raw and self._pack is not None:
            pack = self._pack
        else:
            try:
                pack = Pack(raw, expected)
            except PackError as error:
                return SuggestCheck(ok=False, detail=str(error))
            self._raw, self._pack = raw, pack
            self.metrics.suggest_pack_info.clear()
            self.metrics.suggest_pack_info.labels(version=pack.version, sha256=pack.sha256).set(1)
        return SuggestCheck(
            ok=True,
            detail="pack present, hash verified, served at /v1/suggest",
            version=pack.version,
            sha256=pack.sha256,
        )

    def check(self) -> SuggestCheck:
        """Reads and verifies the pack again at most every few seconds, so that a pack changed
        or removed on disk shows on the status page and in the metrics."""
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > RECHECK_S:
            result = self._load()
            if not result.ok and (self._checked is None or self._checked[1].ok):
                log.warning("suggestion pack unusable", extra={"fields": {"detail": result.detail}})
            self._checked = (now, result)
        return self._checked[1]

    def manifest(self) -> SuggestManifest:
        check = self.check()
        if not check.ok or self._raw is None or check.sha256 is None or check.version is None:
            raise Unavailable(
                "suggestions_unavailable", f"suggested replies are unavailable: {check.detail}"
            )
        return SuggestManifest(
            version=check.version,
            sha256=check.sha256,
            size=len(self._raw),
            url=f"/v1/suggest/pack/{check.sha256}.json",
        )

    def pack_bytes(self, sha256: str) -> bytes:
        manifest = self.manifest()
        if sha256 != manifest.sha256 or self._raw is None:
            raise NotFound("unknown_pack", f"this server serves pack {manifest.sha256}")
        self.metrics.suggest_served.inc()
        return self._raw

    def report(self, report: SuggestReport) -> None:
        bad = [p for p in report.taken if p not in POSITIONS]
        if bad:
            raise Invalid("invalid_position", "a taken chip's position is 1, 2 or 3")
        self.metrics.suggest_shown.inc(report.shown)
        for position in report.taken:
            self.metrics.suggest_taken.labels(position=str(position)).inc()
        self.metrics.suggest_load_failures.inc(report.load_failures)
