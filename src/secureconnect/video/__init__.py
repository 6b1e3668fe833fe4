"""Calls: the SFU (Janus) and, to come, signaling and TURN credentials."""
