"""A minimal OpenAI-compatible chat client on urllib (no ``openai`` package needed).

Used by the LLM judge and by ``traits.generate_trait``; it sits below both, so neither
imports the other for it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from types import SimpleNamespace


class JudgeError(RuntimeError):
    """The judge could not produce a score (endpoint unreachable, garbage reply...).

    ``retryable`` says whether trying again can help: timeouts, refused connections,
    HTTP 429 and 5xx can; a 401, a 404 or a reply in the wrong format will not.
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class _HTTPChatClient:
    """A minimal OpenAI-compatible client (``client.chat.completions.create``) on urllib."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 60.0):
        self.base_url, self.api_key, self.timeout = base_url.rstrip("/"), api_key, timeout
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, **payload):
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(payload).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            excerpt = err.read()[:200].decode("utf-8", errors="replace")
            hint = {
                401: " (check the API key)",
                403: " (the key may lack access to this model)",
                404: " (check base_url and the model name)",
                429: " (rate limited)",
            }.get(err.code, "")
            raise JudgeError(
                f"judge endpoint {self.base_url} answered HTTP {err.code}{hint}: {excerpt!r}",
                retryable=err.code == 429 or err.code >= 500,
            ) from None
        except (urllib.error.URLError, OSError) as err:  # refused, DNS, timeout
            raise JudgeError(
                f"judge endpoint {self.base_url} is unreachable (timeout {self.timeout:g} s): {err}", retryable=True
            ) from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise JudgeError(
                f"judge endpoint {self.base_url} replied with bytes that are not UTF-8: {body[:120]!r}"
            ) from None
        try:
            return json.loads(text, object_hook=lambda d: SimpleNamespace(**d))
        except json.JSONDecodeError:
            raise JudgeError(f"judge endpoint {self.base_url} replied with non-JSON: {text[:120]!r}") from None


def make_openai_client(base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0):
    """An OpenAI-compatible client from arguments or ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    if not base_url and api_key:
        base_url = "https://api.openai.com/v1"
    if not base_url:
        raise JudgeError(
            "no LLM endpoint configured: pass base_url=/api_key= (any OpenAI-compatible server, "
            "e.g. a local vLLM or llama.cpp server) or set OPENAI_BASE_URL / OPENAI_API_KEY. "
            "Offline, use personalab.judges.EmbeddingJudge instead."
        )
    return _HTTPChatClient(base_url, api_key, timeout)
