"""Profiles: a display name and a picture for people, a name and a picture for groups."""
