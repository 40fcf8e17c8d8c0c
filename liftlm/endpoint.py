"""One client for OpenAI-compatible chat endpoints (``http(s)://HOST/v1#MODEL``), used for QA synthesis
(``--qa-model``) and for judging (``--judge``): a timeout per request, retries with exponential back-off on
network errors, 429 and 5xx, and one clear ``LiftError`` when the endpoint cannot be used.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from .errors import LiftError


def is_endpoint(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(("http://", "https://"))


class ChatEndpoint:
    """``POST {base}/chat/completions`` with ``model`` taken from the spec's ``#MODEL`` part.

    ``flag`` names the setting in error messages; ``key_variables`` are the environment variables tried, in
    order, for a bearer key."""

    def __init__(self, spec: str, flag: str, key_variables: tuple[str, ...] = ("OPENAI_API_KEY",),
                 default_model: str | None = None, timeout: float = 120.0, retries: int = 3):
        base, _, model = spec.partition("#")
        model = model.strip() or (default_model or "")
        if not model:
            raise LiftError(f"{flag}: name the endpoint's model after '#', e.g. {base}#gpt-4o (got {spec!r})")
        self.flag = flag
        self.url = base.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"{base}#{model}"
        self.timeout = timeout
        self.retries = retries
        self.key = next((os.environ[v] for v in key_variables if os.environ.get(v)), None)

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url, json.dumps(payload).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def chat(self, messages: list[dict], max_tokens: int | None = None, temperature: float = 0.0) -> str:
        """The reply's text (greedy by default)."""
        payload: dict = {"model": self.model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                return self._post(payload)["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                error = e
                if e.code < 500 and e.code != 429:  # a client error will not fix itself
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                error = e
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise LiftError(f"{self.flag}: {self.url} did not answer like an OpenAI chat endpoint ({e!r})") from None
            if attempt + 1 < self.retries:
                time.sleep(2**attempt)
        raise LiftError(f"{self.flag}: the endpoint {self.url} failed ({error})")
