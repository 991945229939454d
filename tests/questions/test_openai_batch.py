"""provider="openai" with batch=True: the OpenAI Batch API (JSONL upload, batch, poll, output and
error files) against the loopback fake, into the same cache and the same batch sidecar as
Anthropic's Message Batches; a server without the API is an error naming batch and base_url."""

from __future__ import annotations

import json

import openai
import pytest

from helpers.claude import pricing
from helpers.claude.batch_api import NoBatchAPI, OpenAIBatches
from helpers.claude.cache import read_sidecar
from helpers.claude.providers import choose
from helpers.questions import generate as qa
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_openai_batches import SDK_VERSION, FakeOpenAIBatches
from tests.support.openai_fixtures import OPENAI_KEY, no_openai_credentials  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(
    openai.__version__ != SDK_VERSION,
    reason=f"the fake's batch endpoints answer openai {SDK_VERSION}'s calls; installed: "
           f"{openai.__version__}")

PRICE = (1.0, 4.0)        # USD per million tokens, so the batch half price shows


def make_passages(k: int, tag: str = ""):
    return [qa.Passage(text=f"Passage {i}{tag}. The Lighthouse of Varn stood over the harbour, "
                            f"and Mariya counted {i} boats coming home before the storm.",
                       book="harbour_tales", first_page=i + 1, last_page=i + 2, index=i)
            for i in range(k)]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)


@pytest.fixture
def fake():
    server = FakeOpenAIBatches().start()
    yield server
    server.stop()


def ask(ps, cache, url, **kw):
    kw.setdefault("retry_base_s", 0.01)
    kw.setdefault("poll_interval_s", 0.01)
    kw.setdefault("progress", False)
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("price_per_mtok", PRICE)
    return qa.generate_questions(ps, cache, provider="openai", base_url=url, batch=True, **kw)


def test_a_batch_uploads_jsonl_polls_and_saves_each_result_at_half_price(fake, key, tmp_path):
    ps, cache = make_passages(5), tmp_path / "c.jsonl"
    res = ask(ps, cache, fake.base_url)
    assert res.complete and res.asked == 5 and len(res.records) == 10
    # one file, one batch, polled until it ended, the output file read; no live request
    assert fake.count("files.create") == 1 and fake.count("batches.create") == 1
    assert fake.count("batches.retrieve") == fake.batch_polls and fake.count() == 0
    assert fake.count("files.content") == 1          # the output file (no error file)
    lines = fake.uploads[0]
    assert [x["custom_id"] for x in lines] == [p.sha256 for p in ps]
    assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
    body = lines[0]["body"]
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 64 * 2 + 64
    assert body["response_format"]["json_schema"]["schema"]["properties"]["questions"]["minItems"] == 2
    # records: same cache, same key as live requests (model @ server), the batch id
    side = read_sidecar(cache)["batches"]
    assert len(side) == 1 and side[0]["status"] == "collected"
    assert side[0]["api"] == "OpenAI Batch API" and side[0]["input_file_id"].startswith("file-")
    assert {r["batch_id"] for r in res.records} == {side[0]["id"]}
    assert {r["model"] for r in res.records} == {f"gpt-4o-mini @ {fake.base_url}"}
    assert {r["source"] for r in res.records} == {"openai"}
    # cost: the replies' usage at half the list price
    u = res.usage
    full = (u["input_tokens"] * PRICE[0] + u["output_tokens"] * PRICE[1]) / 1e6
    assert u["requests"] == 5 and res.cost_usd == pytest.approx(full * 0.5, rel=1e-6)
    # asked again: everything from the cache, nothing sent
    again = ask(ps, cache, fake.base_url)
    assert again.reused == 5 and fake.count("files.create") == 1


def test_a_rerun_resumes_polling_the_submitted_batch_instead_of_submitting_again(
        fake, key, tmp_path):
    ps, cache = make_passages(4), tmp_path / "c.jsonl"
    first = ask(ps, cache, fake.base_url, batch_wait=False)
    assert len(first.batches) == 1 and first.not_asked == 4 and not first.complete
    assert fake.count("batches.create") == 1 and fake.count("batches.retrieve") == 0
    side = read_sidecar(cache)["batches"]
    assert side[0]["id"] == first.batches[0] and side[0]["status"] == "in_progress"
    assert set(side[0]["passages"]) == {p.sha256 for p in ps}
    # a new process (a crash after submitting, or batch_wait=False) collects the same batch
    res = ask(ps, cache, fake.base_url)
    assert res.complete and res.asked == 4
    assert fake.count("batches.create") == 1 and fake.count("files.create") == 1
    assert read_sidecar(cache)["batches"][0]["status"] == "collected"


def test_failed_requests_from_the_error_file_are_retried_or_recorded(fake, key, tmp_path):
    ps, cache = make_passages(4), tmp_path / "c.jsonl"
    fake.add(status=500, match="Passage 1.")            # once: retried in a second batch
    fake.add(status=400, match="Passage 2.", times=-1)  # always: recorded as failed
    fake.add(reply="prose", match="Passage 3.")         # malformed once: asked again
    res = ask(ps, cache, fake.base_url)
    assert fake.count("batches.create") == 2
    assert [len(u) for u in fake.uploads] == [4, 2]
    assert {x["custom_id"] for x in fake.uploads[1]} == {ps[1].sha256, ps[3].sha256}
    assert res.asked == 3 and len(res.failed) == 1
    sha, _, reason = res.failed[0]
    assert sha == ps[2].sha256 and "HTTP 400" in reason and "after 1 attempts" in reason
    assert res.attempt_errors == {"500": 1, "invalid_request_error": 1, "malformed": 1}
    assert OPENAI_KEY not in cache.read_text()


def test_an_expired_batch_submits_only_what_has_no_result(key, tmp_path):
    server = FakeOpenAIBatches(batch_end="expired", expire=2).start()
    try:
        ps, cache = make_passages(5), tmp_path / "c.jsonl"
        res = ask(ps, cache, server.base_url, max_attempts=2)
        # the first batch answered 3 of 5; the 2 without a result went out again (and that
        # batch expired with 2 unanswered as well: recorded as failed after 2 attempts)
        assert [len(u) for u in server.uploads] == [5, 2]
        assert res.asked == 3 and len(res.failed) == 2
        assert all("no result (batch expired)" in r for _, _, r in res.failed)
    finally:
        server.stop()


def test_a_batch_that_failed_validation_is_recorded_with_the_servers_reason(key, tmp_path):
    server = FakeOpenAIBatches(batch_end="failed").start()
    try:
        res = ask(make_passages(2), tmp_path / "c.jsonl", server.base_url)
        assert res.asked == 0 and len(res.failed) == 2
        assert all("batch failed: invalid_request: fake: the batch failed validation" in r
                   for _, _, r in res.failed)
        assert server.count("batches.create") == 1            # not retried: it would fail again
    finally:
        server.stop()


def test_a_server_that_refuses_the_schema_in_a_batch_is_asked_again_without_it(key, tmp_path):
    server = FakeOpenAIBatches(schema="refuse").start()
    try:
        res = ask(make_passages(3), tmp_path / "c.jsonl", server.base_url)
        assert res.complete and res.asked == 3
        assert ["response_format" in u[0]["body"] for u in server.uploads] == [True, False]
    finally:
        server.stop()


def test_a_server_without_the_batch_api_is_an_error_naming_batch_and_base_url(key, tmp_path):
    server = FakeOpenAI().start()       # answers 404 on /files, as Ollama/vLLM/LM Studio do
    try:
        cache = tmp_path / "c.jsonl"
        with pytest.raises(NoBatchAPI, match=r"batch=True: the server at base_url=http://127"
                                             r".*POST /files answered HTTP 404.*batch=False"):
            ask(make_passages(2), cache, server.base_url)
        assert server.count() == 0 and read_sidecar(cache)["batches"] == []
        assert not cache.exists() or cache.read_text() == ""
    finally:
        server.stop()


def test_openai_batch_price_is_half_the_list_price():
    full = pricing.cost_usd("gpt-4o-mini", 1_000_000, 1_000_000, provider="openai")
    half = pricing.cost_usd("gpt-4o-mini", 1_000_000, 1_000_000, provider="openai", batch=True)
    assert full == pytest.approx(0.75) and half == pytest.approx(0.375)
    assert pricing.batch_discount("openai") == pricing.OPENAI_BATCH_DISCOUNT == 0.5
    est = qa.estimate(make_passages(3), 2, "gpt-4o-mini", provider="openai", batch=True)
    live = qa.estimate(make_passages(3), 2, "gpt-4o-mini", provider="openai")
    assert est.usd == pytest.approx(live.usd / 2)


def test_the_jsonl_line_is_a_chat_completion_request_for_openai_itself():
    b = OpenAIBatches(client=None, provider=choose("openai"))
    line = b.line("abc", {"model": "gpt-5-mini", "max_tokens": 100, "system": "S",
                          "messages": [{"role": "user", "content": "U"}]}, None)
    assert line == {"custom_id": "abc", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-5-mini", "max_completion_tokens": 100,
                             "messages": [{"role": "system", "content": "S"},
                                          {"role": "user", "content": "U"}]}}
    assert json.loads(b.jsonl([("abc", {"model": "m", "max_tokens": 1, "messages": []}, None)]))
