"""X3DH ("The X3DH Key Agreement Protocol", Signal, rev. 1), curve X25519, hash SHA-256.

One deviation, forced by the browser: the identity key cannot sign (no XEdDSA in WebCrypto), so
each device also has an Ed25519 signing key that signs its X25519 identity key and its signed
prekey. Both public keys go into the associated data and the safety number.
"""

from __future__ import annotations

from dataclasses import dataclass

from secureconnect.crypto.primitives import (
    CryptoError,
    DHKeyPair,
    Random,
    SigningKeyPair,
    dh,
    hkdf,
    system_random,
    verify,
)

INFO = b"SecureConnect_X3DH_v1"
F = b"\xff" * 32  # X3DH section 2.2: 32 0xFF bytes before the DH outputs, for X25519
IDENTITY_LABEL = b"SC-IK-v1"
SPK_LABEL = b"SC-SPK-v1"


def identity_payload(identity_key: bytes) -> bytes:
    return IDENTITY_LABEL + identity_key


def spk_payload(spk_id: int, spk: bytes) -> bytes:
    return SPK_LABEL + spk_id.to_bytes(4, "big") + spk


@dataclass(frozen=True)
class DeviceIdentity:
    """A device's long-term keys."""

    dh: DHKeyPair
    signing: SigningKeyPair

    @classmethod
    def generate(cls, rng: Random = system_random) -> DeviceIdentity:
        return cls(DHKeyPair.generate(rng), SigningKeyPair.generate(rng))

    @property
    def identity_sig(self) -> bytes:
        return self.signing.sign(identity_payload(self.dh.public))

    def sign_prekey(self, spk_id: int, spk: DHKeyPair) -> bytes:
        return self.signing.sign(spk_payload(spk_id, spk.public))


@dataclass(frozen=True)
class Bundle:
    """What the key directory gives out to start a session with one device."""

    identity_key: bytes
    signing_key: bytes
    identity_sig: bytes
    spk_id: int
    spk: bytes
    spk_sig: bytes
    opk_id: int | None = None
    opk: bytes | None = None

    def verify(self) -> None:
        verify(self.signing_key, identity_payload(self.identity_key), self.identity_sig)
        verify(self.signing_key, spk_payload(self.spk_id, self.spk), self.spk_sig)


@dataclass(frozen=True)
class InitialHeader:
    """Sent with the first message so that the responder can compute the same secret."""

    identity_key: bytes
    signing_key: bytes
    ephemeral_key: bytes
    spk_id: int
    opk_id: int | None


def associated_data(
    initiator_ik: bytes, initiator_sk: bytes, responder_ik: bytes, responder_sk: bytes
) -> bytes:
    return initiator_ik + initiator_sk + responder_ik + responder_sk


def _kdf(*dh_outputs: bytes) -> bytes:
    return hkdf(F + b"".join(dh_outputs), b"\x00" * 32, INFO, 32)


def initiate(
    own: DeviceIdentity, bundle: Bundle, rng: Random = system_random
) -> tuple[bytes, bytes, InitialHeader]:
    """Alice's side: returns the shared secret, the associated data and the header to send."""
    bundle.verify()
    ek = DHKeyPair.generate(rng)
    outputs = [
        dh(own.dh.private, bundle.spk),
        dh(ek.private, bundle.identity_key),
        dh(ek.private, bundle.spk),
    ]
    if bundle.opk is not None:
        outputs.append(dh(ek.private, bundle.opk))
    ad = associated_data(own.dh.public, own.signing.public, bundle.identity_key, bundle.signing_key)
    header = InitialHeader(
        own.dh.public,
        own.signing.public,
        ek.public,
        bundle.spk_id,
        bundle.opk_id if bundle.opk is not None else None,
    )
    return _kdf(*outputs), ad, header


def respond(
    own: DeviceIdentity,
    spk: DHKeyPair,
    opk: DHKeyPair | None,
    header: InitialHeader,
) -> tuple[bytes, bytes]:
    """Bob's side, given the prekeys the header names (the caller deletes the one-time key)."""
    if (header.opk_id is None) != (opk is None):
        raise CryptoError("unknown_prekey", "the one-time prekey this message used is gone")
    outputs = [
        dh(spk.private, header.identity_key),
        dh(own.dh.private, header.ephemeral_key),
        dh(spk.private, header.ephemeral_key),
    ]
    if opk is not None:
        outputs.append(dh(opk.private, header.ephemeral_key))
    ad = associated_data(header.identity_key, header.signing_key, own.dh.public, own.signing.public)
    return _kdf(*outputs), ad
