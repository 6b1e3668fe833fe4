"""SecureConnect's end-to-end encryption (protocol version 1).

It runs on the devices: the SDK encrypts and decrypts with it. The server imports only what
checks a public signature (a device's signed prekey, its identity payload); it holds no private
key and never calls a decrypting function. It lives beside ``client/`` rather than inside it
because both sides use it.

Built on `cryptography`'s X25519, Ed25519, HKDF-SHA256, HMAC-SHA256 and AES-256-GCM, the five
primitives WebCrypto also offers, so that the browser client can match it byte for byte:

- :mod:`.x3dh`: Signal's X3DH key agreement, with a separate Ed25519 signing key in place of XEdDSA;
- :mod:`.ratchet`: Signal's Double Ratchet, AES-256-GCM as the AEAD, bounded skipped keys;
- :mod:`.senderkeys`: per-device sender keys for conversations (a hash ratchet plus a signature);
- :mod:`.safety`: Signal's numeric safety numbers.

The protocol is written out in docs/e2ee.md; tests/vectors/ holds its test vectors.
"""

PROTOCOL_VERSION = 1
