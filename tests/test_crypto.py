"""The E2EE building blocks against the checked-in vectors (the contract the browser client must
also meet) and against Project Wycheproof's cases for the five primitives."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from secureconnect.crypto import pairwise, safety, senderkeys, sframe
from secureconnect.crypto.primitives import (
    CryptoError,
    DHKeyPair,
    FixedRandom,
    SigningKeyPair,
    aead_decrypt,
    dh,
    hkdf,
    hmac_sha256,
    verify,
)
from secureconnect.crypto.ratchet import Ratchet
from secureconnect.crypto.x3dh import Bundle, DeviceIdentity, initiate, respond
from tests.vectors import generate

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def u(value: str) -> bytes:
    return base64.b64decode(value)


def test_vector_files_are_what_the_code_produces() -> None:
    for name, data in generate.build().items():
        assert json.loads(json.dumps(data)) == load(name), f"{name} is stale: run generate.py"


@pytest.mark.parametrize("case", load("x3dh.json")["cases"], ids=lambda c: c["name"])
def test_x3dh_both_sides_reach_the_vector_secret(case) -> None:
    alice = DeviceIdentity(
        DHKeyPair.from_private(u(case["alice"]["identity_private"])),
        SigningKeyPair.from_private(u(case["alice"]["signing_private"])),
    )
    bob = DeviceIdentity(
        DHKeyPair.from_private(u(case["bob"]["identity_private"])),
        SigningKeyPair.from_private(u(case["bob"]["signing_private"])),
    )
    raw = case["bundle"]
    bundle = Bundle(
        u(raw["identity_key"]),
        u(raw["signing_key"]),
        u(raw["identity_sig"]),
        raw["spk_id"],
        u(raw["spk"]),
        u(raw["spk_sig"]),
        raw["opk_id"],
        u(raw["opk"]) if raw["opk"] else None,
    )
    ephemeral = u(case["alice"]["ephemeral_private"])
    secret, ad, header = initiate(alice, bundle, lambda n: ephemeral)
    assert base64.b64encode(secret).decode() == case["shared_secret"]
    assert base64.b64encode(ad).decode() == case["associated_data"]
    opk = (
        DHKeyPair.from_private(u(case["bob"]["opk_private"]))
        if case["bob"]["opk_private"]
        else None
    )
    spk = DHKeyPair.from_private(u(case["bob"]["spk_private"]))
    assert respond(bob, spk, opk, header) == (secret, ad)
    # The wire form of the first message carries what the responder needs, and nothing private.
    initial, _, _ = pairwise.decode(pairwise.encode(header, b"\x00" * 40, b"x"))
    assert initial == header


def test_x3dh_refuses_a_bundle_whose_signature_was_altered() -> None:
    bad = load("x3dh.json")["invalid_bundles"][0]
    raw = bad["bundle"]
    bundle = Bundle(
        u(raw["identity_key"]),
        u(raw["signing_key"]),
        u(raw["identity_sig"]),
        raw["spk_id"],
        u(raw["spk"]),
        u(raw["spk_sig"]),
        raw["opk_id"],
        None,
    )
    with pytest.raises(CryptoError) as refused:
        initiate(DeviceIdentity.generate(), bundle)
    assert refused.value.code == bad["error"]


def test_double_ratchet_transcript_replays_exactly() -> None:
    data = load("ratchet.json")
    rng = FixedRandom(data["random"]["seed"].encode())
    secret, ad = rng(32), rng(96)
    assert base64.b64encode(secret).decode() == data["shared_secret"]
    spk = DHKeyPair.generate(rng)
    parties = {
        "alice": Ratchet.for_initiator(secret, ad, spk.public, rng),
        "bob": Ratchet.for_responder(secret, ad, spk),
    }
    for op in data["operations"]:
        ratchet = parties[op["by"]]
        if op["op"] == "encrypt":
            header, ct = ratchet.encrypt(op["plaintext"].encode())
            assert (base64.b64encode(header).decode(), base64.b64encode(ct).decode()) == (
                op["header"],
                op["ciphertext"],
            )
        elif op["op"] == "decrypt":
            assert ratchet.decrypt(u(op["header"]), u(op["ciphertext"]), rng) == (
                op["plaintext"].encode()
            )
        else:
            before = ratchet.to_json()
            with pytest.raises(CryptoError) as refused:
                ratchet.decrypt(u(op["header"]), u(op["ciphertext"]), rng)
            assert refused.value.code == op["error"], op["case"]
            assert ratchet.to_json() == before  # a refused message changes nothing


def test_ratchet_state_survives_a_round_trip_through_json() -> None:
    rng = FixedRandom(b"persist")
    secret, ad, spk = rng(32), rng(96), DHKeyPair.generate(rng)
    alice = Ratchet.for_initiator(secret, ad, spk.public, rng)
    bob = Ratchet.for_responder(secret, ad, spk)
    first = alice.encrypt(b"one")
    skipped = alice.encrypt(b"two")
    bob.decrypt(*first, rng)
    bob = Ratchet.from_json(json.loads(json.dumps(bob.to_json())))
    assert bob.decrypt(*skipped, rng) == b"two"


def test_sender_key_chain_in_any_order_and_its_refusals() -> None:
    data = load("senderkey.json")
    conv = data["conversation_id"]
    inbound = senderkeys.InboundSenderKey.from_share(data["share"])
    messages = data["messages"]
    for index in data["receive_order"]:
        envelope = senderkeys.decode(messages[index]["body"].encode())
        assert inbound.decrypt(conv, envelope) == messages[index]["plaintext"].encode()
    for case in data["invalid"]:
        receiver = inbound
        if not case.get("after_all"):
            receiver = senderkeys.InboundSenderKey.from_share(data["share"])
        with pytest.raises(CryptoError) as refused:
            receiver.decrypt(
                case.get("conversation_id", conv), senderkeys.decode(case["body"].encode())
            )
        assert refused.value.code == case["error"], case["name"]
    late = senderkeys.InboundSenderKey.from_share(data["share_after_5"])
    for message in messages:
        with pytest.raises(CryptoError) as refused:
            late.decrypt(conv, senderkeys.decode(message["body"].encode()))
        assert refused.value.code == data["late_joiner"]["error"]


def test_sender_key_envelopes_with_the_wrong_version_are_refused() -> None:
    body = json.loads(load("senderkey.json")["messages"][0]["body"])
    for change, code in (
        ({"v": 2}, "unsupported_version"),
        ({"alg": "x"}, "bad_envelope"),
        ({"i": "0"}, "bad_envelope"),
    ):
        with pytest.raises(CryptoError) as refused:
            senderkeys.decode(json.dumps({**body, **change}).encode())
        assert refused.value.code == code
    with pytest.raises(CryptoError):
        senderkeys.decode(b"plain text, not an envelope")


def test_safety_number_vector() -> None:
    data = load("safety.json")

    def key(party: dict[str, Any]) -> bytes:
        return safety.party_key([(d, u(s), u(i)) for d, s, i in party["devices"]])

    a, b = key(data["alice"]), key(data["bob"])
    assert safety.fingerprint("alice", a) == data["alice_fingerprint"]
    assert safety.safety_number("alice", a, "bob", b) == data["safety_number"]
    assert safety.safety_number("bob", b, "alice", a) == data["safety_number"]
    assert len(data["safety_number"]) == 60


# ----- Wycheproof ---------------------------------------------------------------------------


def wycheproof(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads((VECTORS / "wycheproof" / name).read_text())
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def test_wycheproof_x25519() -> None:
    checked = 0
    for _, t in wycheproof("x25519_test.json"):
        private, public = bytes.fromhex(t["private"]), bytes.fromhex(t["public"])
        shared = bytes.fromhex(t["shared"])
        if t["result"] == "invalid" or shared == bytes(32):
            with pytest.raises(CryptoError):
                dh(private, public)
        else:
            assert dh(private, public) == shared, t["tcId"]
        checked += 1
    assert checked == 518


def test_wycheproof_ed25519() -> None:
    accepted = refused = 0
    for group, t in wycheproof("ed25519_test.json"):
        public = bytes.fromhex(group["publicKey"]["pk"])
        msg, sig = bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"])
        if t["result"] == "valid":
            verify(public, msg, sig)
            accepted += 1
        else:
            with pytest.raises(CryptoError):
                verify(public, msg, sig)
            refused += 1
    assert (accepted, refused) == (88, 63)


def test_wycheproof_aes_256_gcm_with_96_bit_nonces() -> None:
    checked = 0
    for group, t in wycheproof("aes_gcm_test.json"):
        if group["keySize"] != 256 or group["ivSize"] != 96 or group["tagSize"] != 128:
            continue  # the protocol only ever uses AES-256, 12-byte nonces, 16-byte tags
        key, iv = bytes.fromhex(t["key"]), bytes.fromhex(t["iv"])
        sealed = bytes.fromhex(t["ct"]) + bytes.fromhex(t["tag"])
        aad, msg = bytes.fromhex(t["aad"]), bytes.fromhex(t["msg"])
        if t["result"] == "valid":
            assert aead_decrypt(key, iv, sealed, aad) == msg
        else:
            with pytest.raises(CryptoError):
                aead_decrypt(key, iv, sealed, aad)
        checked += 1
    assert checked == 66


def test_wycheproof_hkdf_sha256_and_hmac_sha256() -> None:
    derived = tagged = 0
    for _, t in wycheproof("hkdf_sha256_test.json"):
        if t["result"] != "valid":
            continue  # the invalid cases ask for more output than HKDF allows
        okm = hkdf(
            bytes.fromhex(t["ikm"]),
            bytes.fromhex(t["salt"]),
            bytes.fromhex(t["info"]),
            int(t["size"]),
        )
        assert okm == bytes.fromhex(t["okm"]), t["tcId"]
        derived += 1
    for group, t in wycheproof("hmac_sha256_test.json"):
        tag = hmac_sha256(bytes.fromhex(t["key"]), bytes.fromhex(t["msg"]))
        expected = bytes.fromhex(t["tag"])
        matches = tag[: group["tagSize"] // 8] == expected
        assert matches == (t["result"] == "valid"), t["tcId"]
        tagged += 1
    assert (derived, tagged) == (83, 174)


@pytest.mark.parametrize("case", load("rfc8032.json")["cases"], ids=lambda c: c["name"])
def test_rfc8032_ed25519(case) -> None:
    pair = SigningKeyPair.from_private(bytes.fromhex(case["secret"]))
    assert pair.public.hex() == case["public"]
    signature = pair.sign(bytes.fromhex(case["message"]))
    assert signature.hex() == case["signature"]
    verify(pair.public, bytes.fromhex(case["message"]), signature)
    with pytest.raises(CryptoError):
        verify(pair.public, bytes.fromhex(case["message"]) + b"!", signature)


def test_sframe_meets_rfc9605_and_the_shared_vectors() -> None:
    v = load("sframe.json")
    rfc = v["rfc9605"]
    key = sframe.derive(bytes.fromhex(rfc["base_key"]), rfc["kid"])
    assert (key.key.hex(), key.salt.hex()) == (rfc["sframe_key"], rfc["sframe_salt"])
    metadata, plain = bytes.fromhex(rfc["metadata"]), bytes.fromhex(rfc["pt"])
    assert sframe.encrypt(key, rfc["ctr"], metadata, plain).hex() == rfc["ct"]
    assert (
        sframe.decrypt(lambda k: key if k == key.kid else None, metadata, bytes.fromhex(rfc["ct"]))
        == plain
    )
    for h in v["headers"]:
        kid, ctr = int(h["kid"]), int(h["ctr"])
        assert sframe.encode_header(kid, ctr).hex() == h["encoded"]
        encoded = bytes.fromhex(h["encoded"])
        assert sframe.parse_header(encoded) == (kid, ctr, len(encoded))
    base = u(v["generations"][0]["base_key"])
    for g in v["generations"]:
        assert u(g["base_key"]) == base
        derived = sframe.derive(base, g["kid"])
        assert (
            base64.b64encode(derived.key).decode(),
            base64.b64encode(derived.salt).decode(),
        ) == (g["key"], g["salt"])
        base = sframe.ratchet(base)
    first = v["generations"][0]
    keys = {first["kid"]: sframe.FrameKey(first["kid"], u(first["key"]), u(first["salt"]))}
    for f in v["frames"]:
        wire = u(f["wire"])
        assert sframe.unprotect(keys.get, wire, f["kind"]) == u(f["plain"])
        clear = sframe.CLEAR_BYTES[f["kind"]]
        assert wire[:clear] == u(f["plain"])[:clear]  # the codec header stays readable
        assert u(f["plain"])[clear:] not in wire  # and nothing after it
        for at in (0, clear, len(wire) - 1):  # clear prefix, SFrame header, tag
            tampered = bytearray(wire)
            tampered[at] ^= 0x01
            with pytest.raises(CryptoError):
                sframe.unprotect(keys.get, bytes(tampered), f["kind"])
        with pytest.raises(CryptoError) as missing:
            sframe.unprotect({}.get, wire, f["kind"])
        assert missing.value.code == "unknown_key"


def test_attachments_meet_the_shared_vectors_and_refuse_tampering() -> None:
    from secureconnect.client import attachments
    from secureconnect.crypto import attachment

    v = load("attachment.json")
    for f in v["files"]:
        key, chunk = base64.b64decode(f["key"]), f["chunk"]
        plain = base64.b64decode(f["plain"])
        sealed = [base64.b64decode(c) for c in f["chunks"]]
        last = len(sealed) - 1
        assert attachment.ciphertext_size(len(plain), chunk) == f["ciphertext_size"]
        assert sum(map(len, sealed)) == f["ciphertext_size"]
        opened = b"".join(
            attachment.decrypt_chunk(key, i, i == last, c) for i, c in enumerate(sealed)
        )
        assert opened == plain
        if last >= 1:  # reordered, or cut short before the last chunk: the tag fails
            with pytest.raises(CryptoError):
                attachment.decrypt_chunk(key, 0, False, sealed[1])
            with pytest.raises(CryptoError):
                attachment.decrypt_chunk(key, last - 1, True, sealed[last - 1])
        with pytest.raises(CryptoError):  # a last chunk is not an inner one
            attachment.decrypt_chunk(key, last, False, sealed[last])
    for p in v["pointers"]:
        got = attachments.parse(p["body"].encode())
        assert generate.pointer_fields(got) == p["parsed"], p["body"]
