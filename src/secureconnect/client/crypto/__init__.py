"""SecureConnect's end-to-end encryption, client side only (protocol version 1).

Built on `cryptography`'s X25519, Ed25519, HKDF-SHA256, HMAC-SHA256 and AES-256-GCM, the five
primitives WebCrypto also offers, so that the browser client can match it byte for byte:

- :mod:`.x3dh`: Signal's X3DH key agreement, with a separate Ed25519 signing key in place of XEdDSA;
- :mod:`.ratchet`: Signal's Double Ratchet, AES-256-GCM as the AEAD, bounded skipped keys;
- :mod:`.senderkeys`: per-device sender keys for conversations (a hash ratchet plus a signature);
- :mod:`.safety`: Signal's numeric safety numbers.

The protocol is written out in docs/e2ee.md; tests/vectors/ holds its test vectors.
"""

PROTOCOL_VERSION = 1
