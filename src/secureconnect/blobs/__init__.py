"""Attachments: end-to-end encrypted files kept as ciphertext the server cannot read."""
