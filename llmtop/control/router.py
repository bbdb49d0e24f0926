"""Load and unload a model of a router-mode llama-server (`POST /models/load`, `/models/unload`).

The router answers at once (`{"success": true}`) and spawns or stops the model's child llama-
server in the background; `model_status()` reads `/models` to follow it. The API key goes out as
`Authorization: Bearer …` and is never part of an error's words.
"""

from __future__ import annotations

import httpx

from llmtop.snapshot import ModelStatus
from llmtop.sources.llama_http import error_message
from llmtop.sources.router import parse_models


class RouterError(Exception):
    """The router refused or could not be reached; the message says why, in words."""


class RouterControl:
    """The world-changing half of router mode, for one router URL."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key or None
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never shows the key
        return f"RouterControl({self.url!r}, api_key={'***' if self._api_key else None})"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def load(self, model_id: str) -> None:
        """Ask the router to start the model's child (returns once the router accepted it)."""
        await self._post("/models/load", model_id)

    async def unload(self, model_id: str) -> None:
        """Ask the router to stop the model's child."""
        await self._post("/models/unload", model_id)

    async def models(self) -> tuple[ModelStatus, ...]:
        """Every model and its status, as `GET /models` says now."""
        async with self._client() as http:
            try:
                r = await http.get(self.url + "/models", headers=self._headers())
            except httpx.HTTPError as exc:
                raise RouterError(f"/models: {type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise RouterError(_words("/models", r))
        try:
            body = r.json()
        except ValueError:
            raise RouterError("malformed JSON from /models") from None
        return parse_models(body)

    async def model_status(self, model_id: str) -> ModelStatus | None:
        """The model's status now (None: the router does not list it)."""
        for m in await self.models():
            if m.id == model_id or model_id in m.aliases:
                return m
        return None

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), trust_env=False)

    async def _post(self, path: str, model_id: str) -> None:
        async with self._client() as http:
            try:
                r = await http.post(
                    self.url + path, json={"model": model_id}, headers=self._headers()
                )
            except httpx.HTTPError as exc:
                raise RouterError(f"{path}: {type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise RouterError(_words(path, r))


def _words(path: str, r: httpx.Response) -> str:
    if r.status_code == 401:
        return "401 Invalid API Key — check --api-key / LLAMA_API_KEY"
    msg = error_message(r.text)
    return f"HTTP {r.status_code} from {path}" + (f": {msg}" if msg else "")
