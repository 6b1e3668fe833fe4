"""The wire form of a pairwise (device-to-device) message, carried by the per-device inbox.

``{"v": 1, "alg": "dr1", "h": base64 ratchet header, "ct": base64}``, plus, on the messages that
start a session, ``"x3dh": {"ik", "sk", "ek", "spk", "opk"}`` (base64 keys, prekey ids) so that the
recipient can run its side of X3DH. Canonical JSON: sorted keys, no spaces.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from secureconnect.crypto import PROTOCOL_VERSION
from secureconnect.crypto.primitives import CryptoError, b64, unb64
from secureconnect.crypto.x3dh import InitialHeader


def encode(initial: InitialHeader | None, header: bytes, ciphertext: bytes) -> bytes:
    envelope: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "alg": "dr1",
        "h": b64(header),
        "ct": b64(ciphertext),
    }
    if initial is not None:
        envelope["x3dh"] = {
            "ik": b64(initial.identity_key),
            "sk": b64(initial.signing_key),
            "ek": b64(initial.ephemeral_key),
            "spk": initial.spk_id,
            "opk": initial.opk_id,
        }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


def decode(body: bytes) -> tuple[InitialHeader | None, bytes, bytes]:
    try:
        envelope = json.loads(body)
        if envelope.get("v") != PROTOCOL_VERSION:
            raise CryptoError("unsupported_version", "unknown encryption protocol version")
        if envelope.get("alg") != "dr1":
            raise CryptoError("bad_envelope", "not a pairwise message")
        header, ciphertext = unb64(envelope["h"]), unb64(envelope["ct"])
        x = envelope.get("x3dh")
        initial = None
        if x is not None:
            opk = x["opk"]
            if not isinstance(x["spk"], int) or not (opk is None or isinstance(opk, int)):
                raise CryptoError("bad_envelope", "prekey ids must be integers")
            initial = InitialHeader(unb64(x["ik"]), unb64(x["sk"]), unb64(x["ek"]), x["spk"], opk)
    except CryptoError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
        raise CryptoError("bad_envelope", "malformed pairwise envelope") from error
    return initial, header, ciphertext
