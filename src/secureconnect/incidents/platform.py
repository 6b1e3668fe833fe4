"""Platform-wide verification through Prometheus: every replica, not only the one answering.

Closing an incident asks whether the whole platform stayed healthy since "resolved": no 5xx on
any replica, every replica up and reaching its store and bus. A replica only knows itself;
Prometheus knows them all, counter resets from restarts included (``increase`` handles them).
"""

from __future__ import annotations

import math

import httpx

TIMEOUT_S = 5.0


class PrometheusCheck:
    def __init__(self, url: str, job: str = "secureconnect") -> None:
        self.url = url.rstrip("/")
        self.job = job

    async def problems_since(self, seconds: float) -> list[str]:
        """What went wrong in the last ``seconds``; empty when the platform stayed healthy."""
        window = f"{max(1, math.ceil(seconds))}s"
        job = f'job="{self.job}"'
        queries = {
            "errors": "sum(increase(secureconnect_http_requests_total"
            f'{{{job},status=~"5.."}}[{window}]))',
            "down": f"min(min_over_time(up{{{job}}}[{window}]))",
            "unready": f"min(min_over_time(secureconnect_ready{{{job}}}[{window}]))",
        }
        values: dict[str, float | None] = {}
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S) as http:
                for name, query in queries.items():
                    answer = await http.get("/api/v1/query", params={"query": query})
                    answer.raise_for_status()
                    result = answer.json()["data"]["result"]
                    values[name] = float(result[0]["value"][1]) if result else None
        except (httpx.HTTPError, KeyError, ValueError, IndexError) as error:
            return [
                f"cannot verify: Prometheus at {self.url} did not answer ({type(error).__name__})"
            ]
        problems = []
        if values["down"] is None:
            problems.append(f"Prometheus has no samples of job {self.job} in the window")
        elif values["down"] < 1:
            problems.append("a replica was down (up == 0) since resolve")
        if values["unready"] is not None and values["unready"] < 1:
            problems.append("a replica lost its store or bus since resolve")
        errors = values["errors"] or 0.0
        if errors >= 0.5:
            problems.append(f"about {errors:.0f} server errors across the platform since resolve")
        return problems
