"""End-to-end encryption cost: 1 KiB messages in a group of 10, and changing the membership.

In process, no server: this measures the protocol's cryptography as the SDK runs it. As a floor
measured in the same run, it times bare AES-256-GCM on the same 1 KiB.

    .venv/bin/python bench/e2ee.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureconnect.crypto import senderkeys
from secureconnect.crypto.primitives import DHKeyPair
from secureconnect.crypto.ratchet import Ratchet
from secureconnect.crypto.x3dh import Bundle, DeviceIdentity, initiate, respond

GROUP = 10
PAYLOAD = os.urandom(1024)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def group_messages(count: int) -> None:
    sender = senderkeys.OutboundSenderKey.generate()
    share = sender.share()
    receivers = [senderkeys.InboundSenderKey.from_share(share) for _ in range(GROUP - 1)]
    bodies = []
    enc_s, _ = timed(
        lambda: [bodies.append(sender.encrypt("conv", "dev", PAYLOAD)) for _ in range(count)]
    )
    envelopes = [senderkeys.decode(b) for b in bodies]

    def decrypt_all() -> None:
        for receiver in receivers:
            for envelope in envelopes:
                receiver.decrypt("conv", envelope)

    dec_s, _ = timed(decrypt_all)
    key, nonce = AESGCM.generate_key(256), os.urandom(12)
    aes = AESGCM(key)
    ref_s, _ = timed(
        lambda: [aes.decrypt(nonce, aes.encrypt(nonce, PAYLOAD, None), None) for _ in range(count)]
    )
    decrypts = count * (GROUP - 1)
    per_message = (enc_s + dec_s) / count
    print(f"group of {GROUP}, {count} messages of 1 KiB from one sender:")
    print(
        f"  encrypt: {count / enc_s:,.0f} messages/s ({enc_s / count * 1e6:.0f} us each, "
        f"sign included)"
    )
    print(
        f"  decrypt: {decrypts / dec_s:,.0f} messages/s per receiving device "
        f"({dec_s / decrypts * 1e6:.0f} us each, signature check included)"
    )
    print(
        f"  whole group (1 encrypt + {GROUP - 1} decrypts): {per_message * 1e3:.2f} ms "
        f"per message, {1 / per_message:,.0f} messages/s"
    )
    one_pair = enc_s / count + dec_s / decrypts
    print(
        f"  reference, bare AES-256-GCM encrypt+decrypt of 1 KiB: {ref_s / count * 1e6:.1f} us;"
        f" one protocol encrypt+decrypt costs {one_pair / (ref_s / count):.0f}x that "
        f"(the Ed25519 signature and its check dominate)"
    )


def device() -> tuple[DeviceIdentity, DHKeyPair, DHKeyPair]:
    return DeviceIdentity.generate(), DHKeyPair.generate(), DHKeyPair.generate()


def membership_changes() -> None:
    members = [device() for _ in range(GROUP)]
    newcomer, spk, opk = device()
    bundle = Bundle(
        newcomer.dh.public,
        newcomer.signing.public,
        newcomer.identity_sig,
        1,
        spk.public,
        newcomer.sign_prekey(1, spk),
        1,
        opk.public,
    )
    keys = [senderkeys.OutboundSenderKey.generate() for _ in members]

    def add() -> None:
        # Every existing member's device starts a session with the newcomer and sends it its
        # sender key; the newcomer answers each X3DH and decrypts each share.
        for (identity, _, _), key in zip(members, keys, strict=True):
            secret, ad, header = initiate(identity, bundle)
            ratchet = Ratchet.for_initiator(secret, ad, bundle.spk)
            h, ct = ratchet.encrypt(json.dumps(key.share()).encode())
            their_secret, their_ad = respond(newcomer, spk, opk, header)
            Ratchet.for_responder(their_secret, their_ad, spk).decrypt(h, ct)

    add_s, _ = timed(add)
    print(
        f"adding a member to a group of {GROUP}: {add_s * 1e3:.1f} ms of cryptography in all "
        f"({add_s / GROUP * 1e3:.2f} ms per existing member: X3DH both sides, one share)"
    )

    sessions = []
    for (a, _, _), (b, b_spk, _) in zip(members, members[1:] + members[:1], strict=True):
        bb = Bundle(
            b.dh.public, b.signing.public, b.identity_sig, 1, b_spk.public, b.sign_prekey(1, b_spk)
        )
        secret, ad, _ = initiate(a, bb)
        sessions.append(Ratchet.for_initiator(secret, ad, bb.spk))

    def remove() -> None:
        # Each of the remaining members makes a new sender key and sends it to the others over
        # existing sessions (one Double Ratchet message each).
        for _ in range(GROUP - 1):
            share = json.dumps(senderkeys.OutboundSenderKey.generate().share()).encode()
            for ratchet in sessions[: GROUP - 2]:
                ratchet.encrypt(share)

    rm_s, _ = timed(remove)
    print(
        f"removing a member from a group of {GROUP}: {rm_s * 1e3:.1f} ms of cryptography for "
        f"the {GROUP - 1} who stay to rotate ({(GROUP - 1) * (GROUP - 2)} pairwise shares)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    group_messages(args.messages)
    membership_changes()


if __name__ == "__main__":
    main()
