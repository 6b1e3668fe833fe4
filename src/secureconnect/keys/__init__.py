"""The public key directory and the per-device inbox that carries pairwise-encrypted messages."""
