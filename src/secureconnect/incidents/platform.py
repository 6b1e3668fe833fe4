"""Platform-wide verification through Prometheus: every replica, not only the one answering.

Closing an incident asks whether the whole platform stayed healthy since "resolved": no 5xx on
any replica, every replica up and reaching its store and bus. A replica only knows itself;
Prometheus knows them all, counter resets from restarts included (``increase`` handles them).
"""

from __future__ import annotations

import math
import time

import httpx

TIMEOUT_S = 5.0


class PrometheusCheck:
    def __init__(self, url: str, job: str = "secureconnect") -> None:
        self.url = url.rstrip("/")
        self.job = job

    async def _scalar(self, http: httpx.AsyncClient, query: str, at_s: float) -> float | None:
        answer = await http.get("/api/v1/query", params={"query": query, "time": f"{at_s:.3f}"})
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    async def impact(self, start_ms: int, end_ms: int) -> list[str]:
        """The post-mortem's impact from metrics: failed requests across the platform during the
        incident, and connected users before it against the fewest during it."""
        start_s, end_s = start_ms / 1000, max(end_ms, start_ms + 1000) / 1000
        window = f"{max(1, math.ceil(end_s - start_s))}s"
        job = f'job="{self.job}"'
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S) as http:
                errors = await self._scalar(
                    http,
                    f'sum(increase(secureconnect_http_requests_total{{{job},status=~"5.."}}'
                    f"[{window}]))",
                    end_s,
                )
                total = await self._scalar(
                    http,
                    f"sum(increase(secureconnect_http_requests_total{{{job}}}[{window}]))",
                    end_s,
                )
                before = await self._scalar(
                    http, f"sum(secureconnect_active_users{{{job}}})", start_s - 60
                )
                fewest = await self._scalar(
                    http,
                    f"min_over_time(sum(secureconnect_active_users{{{job}}})[{window}:5s])",
                    end_s,
                )
        except (httpx.HTTPError, KeyError, ValueError, IndexError) as error:
            return [f"- From metrics: Prometheus did not answer ({type(error).__name__})"]
        lines = []
        if errors is not None:
            share = f" of about {total:.0f} ({errors / total:.0%})" if total else ""
            lines.append(f"- Failed requests (5xx) across the platform: about {errors:.0f}{share}")
        if before is not None and fewest is not None:
            lines.append(
                f"- Connected users: {before:.0f} a minute before, {fewest:.0f} at the fewest"
            )
        return lines or ["- From metrics: no samples for the incident's window"]

    async def roles(self) -> dict[str, tuple[int, int]]:
        """(ready, seen) replicas per role, seen in the last 10 minutes: a replica that stopped
        answering still counts, as not ready."""
        job = f'job="{self.job}"'
        role_of = f"group_left(role) max_over_time(secureconnect_build_info{{{job}}}[10m])"
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            answer = await http.get(
                "/api/v1/query",
                params={
                    "query": f"min by (instance, role) ("
                    f"(up{{{job}}} * on(instance) {role_of}) or "
                    f"(secureconnect_ready{{{job}}} * on(instance) {role_of}))"
                },
            )
            answer.raise_for_status()
            result = answer.json()["data"]["result"]
        counts: dict[str, tuple[int, int]] = {}
        for series in result:
            role = series["metric"].get("role", "all")
            ready, seen = counts.get(role, (0, 0))
            counts[role] = (ready + (float(series["value"][1]) >= 1), seen + 1)
        return counts

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
        now_s = time.time()
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S) as http:
                for name, query in queries.items():
                    values[name] = await self._scalar(http, query, now_s)
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
