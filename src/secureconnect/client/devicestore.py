"""Where a device keeps its secrets: one JSON file, mode 0600, encrypted when given a passphrase.

With a passphrase the file holds ``AES-256-GCM(key, state)`` where the key is argon2id(passphrase,
random salt); without one, the state in clear, protected by file permissions only (as Signal
Desktop's database key is). Writes go to a temporary file and are renamed into place, so a crash
never leaves half a key store.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureconnect.errors import SecureConnectError

FORMAT = "secureconnect-device-v1"
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 4}


class DeviceStoreError(SecureConnectError):
    pass


class DeviceStore:
    def __init__(self, path: Path, passphrase: str | None = None) -> None:
        self.path = path
        self.passphrase = passphrase
        self._key: bytes | None = None
        self._salt: bytes | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        stored = json.loads(self.path.read_text())
        if stored.get("format") != FORMAT:
            raise DeviceStoreError(f"{self.path} is not a SecureConnect device file")
        if "plain" in stored:
            state: dict[str, Any] = stored["plain"]
            return state
        if self.passphrase is None:
            raise DeviceStoreError("this device's keys are encrypted: give the passphrase")
        self._salt = base64.b64decode(stored["kdf"]["salt"])
        key = self._derive(self._salt, stored["kdf"])
        try:
            clear = AESGCM(key).decrypt(
                base64.b64decode(stored["nonce"]), base64.b64decode(stored["data"]), FORMAT.encode()
            )
        except InvalidTag as error:
            raise DeviceStoreError("wrong passphrase (or the file was altered)") from error
        self._key = key
        loaded: dict[str, Any] = json.loads(clear)
        return loaded

    def save(self, state: dict[str, Any]) -> None:
        clear = json.dumps(state, separators=(",", ":")).encode()
        if self.passphrase is None:
            stored: dict[str, Any] = {"format": FORMAT, "plain": state}
        else:
            if self._key is None or self._salt is None:
                self._salt = os.urandom(16)
                self._key = self._derive(self._salt, KDF)
            nonce = os.urandom(12)
            stored = {
                "format": FORMAT,
                "kdf": {**KDF, "salt": base64.b64encode(self._salt).decode()},
                "nonce": base64.b64encode(nonce).decode(),
                "data": base64.b64encode(
                    AESGCM(self._key).encrypt(nonce, clear, FORMAT.encode())
                ).decode(),
            }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _derive(self, salt: bytes, params: dict[str, Any]) -> bytes:
        assert self.passphrase is not None
        return hash_secret_raw(
            self.passphrase.encode(),
            salt,
            time_cost=params["t"],
            memory_cost=params["m"],
            parallelism=params["p"],
            hash_len=32,
            type=Type.ID,
        )
