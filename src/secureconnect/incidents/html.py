"""The public status page as HTML: what the status service says, for people rather than programs.

Kept apart from the routes so that the page can be read (and tested) without a server.
Everything shown is escaped: incident titles and updates are typed by people.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from html import escape

from secureconnect.incidents.schemas import PublicIncident, StatusPageOut

STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;"
    "color:#1b2230}.banner{padding:1rem;border-radius:10px;color:#fff;font-weight:700}"
    ".green{--c:#137333}.grey{--c:#687386}.yellow{--c:#b06000}.red{--c:#b42318}.banner.green{background:#137333}"
    ".banner.yellow{background:#b06000}.banner.red{background:#b42318}ul.components{padding:0}"
    "ul.components li{list-style:none;display:flex;justify-content:space-between;padding:.6rem 0;"
    "border-bottom:1px solid #e3e7ef}ul.components li span:last-child{color:var(--c);"
    "font-weight:600}article{border-left:3px solid #c7ccd6;padding-left:1rem;margin:1rem 0}"
    "time{color:#687386;font-size:.9rem}"
)
# The page runs no script; its one inline style is allowed by its hash and nothing else is.
CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    + "'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def render_status(page: StatusPageOut) -> str:
    """Plain HTML and CSS: readable on a phone, works with no JavaScript."""

    def when(ms: int | None) -> str:
        return (
            ""
            if ms is None
            else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        )

    def incident(i: PublicIncident) -> str:
        updates = "".join(
            f"<li><b>{escape(u.phase.capitalize())}</b> "
            f"<time>{when(u.at)}</time><br>{escape(u.text)}</li>"
            for u in i.updates
        )
        return f"<article><h3>{escape(i.title)}</h3><ul>{updates}</ul></article>"

    overall = page.overall
    rows = "".join(
        f"<li class={c.colour}><span>{escape(c.name)}</span>"
        f"<span>{escape(c.state.replace('_', ' '))}</span></li>"
        for c in page.components
    )
    active = "".join(incident(i) for i in page.incidents) or "<p>No open incidents.</p>"
    history = "".join(incident(i) for i in page.history) or "<p>No incidents in 90 days.</p>"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60"><title>SecureConnect status</title>
<style>{STYLE}</style></head><body>
<h1>SecureConnect status</h1>
<p class="banner {overall.colour}" id="overall">{escape(overall.text)}</p>
<ul class="components">{rows}</ul>
<h2>Current incidents</h2>{active}
<h2>Past 90 days</h2>{history}
</body></html>"""
