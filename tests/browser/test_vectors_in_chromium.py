"""The browser's implementation of the protocol meets every JSON vector, inside Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # Chromium

VECTORS = Path(__file__).parents[1] / "vectors"


def load_all() -> dict[str, object]:
    names = {
        "x3dh": "x3dh.json",
        "ratchet": "ratchet.json",
        "senderkey": "senderkey.json",
        "safety": "safety.json",
        "sframe": "sframe.json",
        "suggest": "suggest.json",
        "attachment": "attachment.json",
        "rfc8032": "rfc8032.json",
        "x25519": "wycheproof/x25519_test.json",
        "ed25519": "wycheproof/ed25519_test.json",
        "aes_gcm": "wycheproof/aes_gcm_test.json",
        "hkdf": "wycheproof/hkdf_sha256_test.json",
        "hmac": "wycheproof/hmac_sha256_test.json",
    }
    return {key: json.loads((VECTORS / name).read_text()) for key, name in names.items()}


async def test_browser_crypto_passes_every_vector(browser, server) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(server.url + "/healthz")
    script = (Path(__file__).parent / "run_vectors.js").read_text()
    result = await page.evaluate(script, load_all())
    await page.close()
    assert result["failures"] == []
    assert result["checked"] > 1000
    assert errors == []
