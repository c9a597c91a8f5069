"""The caption LLM stage: rewrite a prompt through an ordered list of providers, never failing.

Each provider is an OpenAI-compatible ``/chat/completions`` endpoint tried with a timeout
and a few retries; a provider that keeps failing hands over to the next, and when all are
down the built-in offline rewriter answers. An outage of one LLM vendor costs latency and
tokens elsewhere, never a failed render. Results are cached in PostgreSQL by prompt.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field

import httpx

from render.caches import CachedCaption, CacheStore
from render.settings import CaptionProvider

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Rewrite the user's image prompt as one detailed prompt for a diffusion model: subject, "
    "setting, lighting, lens, style. Reply with the prompt only."
)
# Part of the cache key: a new instruction text must not serve rewrites made for the old one.
STYLE_VERSION = "v1"
OFFLINE_SKU = "llm.offline"


Provider = CaptionProvider


@dataclass(frozen=True)
class Rewrite:
    text: str
    sku_prefix: str
    input_tokens: int
    output_tokens: int
    provider: str
    cached: bool = False
    failures: tuple[str, ...] = field(default_factory=tuple)


def count_tokens(text: str) -> int:
    """A stand-in tokenizer for the offline rewriter: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def offline_rewrite(prompt: str) -> Rewrite:
    text = (
        f"{prompt.strip()}, professional photograph, soft studio lighting, sharp focus, high detail"
    )
    return Rewrite(
        text,
        OFFLINE_SKU,
        count_tokens(INSTRUCTIONS) + count_tokens(prompt),
        count_tokens(text),
        "offline",
    )


def cache_key(prompt: str) -> bytes:
    return hashlib.sha256(f"{STYLE_VERSION}\x00{prompt}".encode()).digest()


class _Retryable(Exception):
    pass


class CaptionClient:
    def __init__(
        self,
        providers: list[Provider],
        cache: CacheStore | None = None,
        *,
        retries: int = 2,
        backoff_s: float = 0.2,
        http: httpx.Client | None = None,
    ) -> None:
        self.providers = providers
        self.cache = cache
        self.retries = retries
        self.backoff_s = backoff_s
        self.http = http or httpx.Client()

    def rewrite(self, prompt: str) -> Rewrite:
        key = cache_key(prompt)
        if self.cache is not None and (hit := self.cache.caption(key)) is not None:
            return Rewrite(
                hit.rewritten,
                hit.sku_prefix,
                hit.input_tokens,
                hit.output_tokens,
                "cache",
                cached=True,
            )
        failures: list[str] = []
        result = None
        for provider in self.providers:
            result = self._try_provider(provider, prompt, failures)
            if result is not None:
                break
        if result is None:
            result = offline_rewrite(prompt)
        result = Rewrite(
            result.text,
            result.sku_prefix,
            result.input_tokens,
            result.output_tokens,
            result.provider,
            failures=tuple(failures),
        )
        if self.cache is not None:
            entry = CachedCaption(
                result.text, result.sku_prefix, result.input_tokens, result.output_tokens
            )
            self.cache.put_caption(key, prompt, entry)
        return result

    def _try_provider(self, provider: Provider, prompt: str, failures: list[str]) -> Rewrite | None:
        for attempt in range(self.retries + 1):
            try:
                return self._call(provider, prompt)
            except _Retryable as exc:
                failures.append(f"{provider.name}: {exc}")
                if attempt < self.retries:
                    time.sleep(min(self.backoff_s * 2**attempt, 2.0))
            except (httpx.HTTPStatusError, ValueError, KeyError, TypeError) as exc:
                failures.append(f"{provider.name}: {exc}")  # a 4xx or a bad answer: next provider
                return None
        log.warning(
            "caption provider %s failed %d times; trying the next", provider.name, self.retries + 1
        )
        return None

    def _call(self, provider: Provider, prompt: str) -> Rewrite:
        headers = {"authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
        body = {
            "model": provider.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": prompt},
            ],
        }
        url = provider.base_url.rstrip("/") + "/chat/completions"
        try:
            response = self.http.post(url, json=body, headers=headers, timeout=provider.timeout_s)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        response.raise_for_status()
        data = response.json()
        text = str(data["choices"][0]["message"]["content"]).strip()
        usage = data["usage"]
        if not text:
            raise ValueError("empty rewrite")
        return Rewrite(
            text,
            provider.sku_prefix,
            int(usage["prompt_tokens"]),
            int(usage["completion_tokens"]),
            provider.name,
        )
