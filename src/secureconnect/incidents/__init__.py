"""Incidents, run the runbook's way (23.2, 23.4): severities with response targets, a lifecycle
with a timestamp on every step, a timeline of everything, and closing only after the platform has
stayed healthy for the verification window."""
