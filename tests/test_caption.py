"""The caption stage falls over to the next provider and never fails a render."""

from __future__ import annotations

import uuid

from ledger.store import Ledger
from render.caches import CacheStore
from render.caption import CaptionClient
from service.settings import CaptionProvider
from tests.stand_ins import provider


def _provider(name: str, url: str, timeout_s: float = 2.0) -> CaptionProvider:
    return CaptionProvider(
        name=name,
        base_url=url,
        model="gpt-4o-mini",
        sku_prefix="llm.gpt-4o-mini",
        timeout_s=timeout_s,
    )


def test_a_500_falls_over_to_the_second_provider() -> None:
    with provider("500") as down, provider("ok") as up:
        client = CaptionClient(
            [_provider("a", down["url"]), _provider("b", up["url"])], retries=1, backoff_s=0.01
        )
        rewrite = client.rewrite("red shoe")
    assert rewrite.provider == "b"
    assert rewrite.text == "red shoe, golden hour"
    assert (rewrite.input_tokens, rewrite.output_tokens) == (41, 17)
    assert rewrite.sku_prefix == "llm.gpt-4o-mini"
    assert down["calls"] == 2  # the first try and one retry
    assert len(rewrite.failures) == 2


def test_a_timeout_falls_over_to_the_second_provider() -> None:
    with provider("slow", delay_s=1.5) as slow, provider("ok") as up:
        client = CaptionClient(
            [_provider("a", slow["url"], 0.2), _provider("b", up["url"])], retries=0
        )
        rewrite = client.rewrite("blue bag")
    assert rewrite.provider == "b"
    assert "ReadTimeout" in rewrite.failures[0]


def test_all_providers_down_means_the_offline_rewriter() -> None:
    with provider("500") as down:
        client = CaptionClient([_provider("a", down["url"])], retries=0)
        rewrite = client.rewrite("green hat")
    assert rewrite.provider == "offline"
    assert rewrite.sku_prefix == "llm.offline"
    assert rewrite.text.startswith("green hat, ")
    assert rewrite.input_tokens > 0
    unreachable = CaptionClient([_provider("x", "http://127.0.0.1:9/v1", 0.2)], retries=0)
    assert unreachable.rewrite("green hat").provider == "offline"


def test_rewrites_are_cached_in_postgres(ledger: Ledger) -> None:
    prompt = f"a vase {uuid.uuid4()}"
    with provider("ok") as up:
        client = CaptionClient([_provider("b", up["url"])], CacheStore(ledger.engine))
        first = client.rewrite(prompt)
        second = client.rewrite(prompt)
        assert up["calls"] == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text
    assert (second.input_tokens, second.output_tokens) == (41, 17)
