"""SecureConnect: self-hostable end-to-end encrypted chat, video calls and the tools to run them."""

__version__ = "0.1.0"
