"""The ``secureconnect`` command."""
