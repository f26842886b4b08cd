"""The demo's HTTP client of the central service (``docs/central.md``): health, upload, plan, cabinets."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from shared.plan import Plan

REQUEST_TIMEOUT_S = 5.0
UPLOAD_TIMEOUT_S = 120.0  # the upload waits for the optimization and the pushes


class CentralError(RuntimeError):
    """The central service answered with an error, or not at all."""


class CentralClient:
    """Async client of one central service at ``base_url`` (write calls send the bearer token)."""

    def __init__(self, base_url: str, token: str, verify: ssl.SSLContext | bool = True) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, verify=verify)
        self._token = token

    async def aclose(self) -> None:
        await self._client.aclose()

    async def healthy(self) -> bool:
        """True when ``/healthz`` answers (the service is up, whatever its status)."""
        try:
            response = await self._client.get("/healthz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def all_edges_connected(self) -> bool:
        """True when ``/healthz`` says the service has a session to every edge."""
        try:
            response = await self._client.get("/healthz")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        connected = response.json().get("edges_connected", {})
        return bool(connected) and all(bool(v) for v in connected.values())

    async def upload(self, body: bytes) -> dict[str, Any]:
        """POST a JSON day-ahead and wait for the plan and push outcomes; the service's answer."""
        status, answer = await self.upload_answer(body)
        if status not in (200, 201, 202):
            raise CentralError(f"upload refused with HTTP {status}: {str(answer)[:300]}")
        return answer

    async def upload_answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """POST a JSON day-ahead; the HTTP status and the JSON answer, whatever the status.

        :class:`CentralError` only when there is no answer (connection refused or lost, timeout).
        """
        try:
            response = await self._client.post(
                "/api/v1/day-ahead",
                content=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
                timeout=UPLOAD_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise CentralError(f"upload failed: {type(exc).__name__}: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {"detail": response.text[:300]}
        return response.status_code, answer if isinstance(answer, dict) else {"detail": answer}

    async def reset_interlock(self, cabinet_id: str) -> tuple[int, dict[str, Any]]:
        """``POST /api/v1/cabinets/{id}/reset-interlock``: the HTTP status and the JSON answer.

        :class:`CentralError` when there is no answer.
        """
        try:
            response = await self._client.post(
                f"/api/v1/cabinets/{cabinet_id}/reset-interlock",
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except httpx.HTTPError as exc:
            raise CentralError(f"reset failed: {type(exc).__name__}: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {"detail": response.text[:300]}
        return response.status_code, answer if isinstance(answer, dict) else {"detail": answer}

    async def latest_plan(self) -> Plan | None:
        try:
            response = await self._client.get("/api/v1/plan/latest")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return Plan.from_json(response.content)

    async def cabinets(self) -> list[dict[str, Any]] | None:
        """``GET /api/v1/cabinets``, or None when the service does not answer."""
        try:
            response = await self._client.get("/api/v1/cabinets")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: list[dict[str, Any]] = response.json()
        return body
