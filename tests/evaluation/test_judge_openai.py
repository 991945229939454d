"""The LLM judge on provider="openai": an OpenAI-compatible server (the fake on loopback)."""

from __future__ import annotations

import pytest

from helpers.evaluation import judge
from tests.evaluation.test_judge import AGAINST, ANSWERS, PERSONA, PROMPTS
from tests.support.openai_fixtures import OPENAI_KEY, no_openai_credentials, oai  # noqa: F401 (fixtures)


def run(url, cache, **kw):
    kw.setdefault("retry_base_s", 0.01)
    return judge.run(judge.pairs(ANSWERS, PROMPTS, AGAINST), cache_path=cache, provider="openai",
                     base_url=url, **PERSONA, **kw)


def test_judged_by_an_openai_compatible_server_and_cached_under_its_url(oai, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    oai.add(match="<answer_1>\nTuned", reply="WINNER: 1\nREASON: Hers.", times=-1)
    oai.add(match="<answer_2>\nTuned", reply="**WINNER:** 2\nREASON: Hers.", times=-1)
    cache = tmp_path / "j.jsonl"
    est = judge.estimate(judge.pairs(ANSWERS, PROMPTS, AGAINST), cache_path=cache,
                         provider="openai", base_url=oai.base_url, model="gpt-4o-mini", **PERSONA)
    assert est.requests == 12 and est.usd > 0 and oai.base_url in str(est)
    res = run(oai.base_url, cache, model="gpt-4o-mini")
    assert res.complete and res.count("asked") == 12 and oai.count() == 12
    assert res.model == f"gpt-4o-mini @ {oai.base_url}" and res.cost_usd > 0
    body = oai.bodies[0]
    assert body["messages"][0]["role"] == "system" and "response_format" not in body
    assert body["max_tokens"] == judge.MAX_TOKENS
    table = res.table().set_index("variant")
    assert (table.wins == 6).all() and (table.win_rate == 1.0).all()
    again = run(oai.base_url, cache, model="gpt-4o-mini")
    assert again.count("cache") == 12 and oai.count() == 12
    # the same model by Anthropic's name is another judge: nothing of these is reused
    assert judge.estimate(judge.pairs(ANSWERS, PROMPTS, AGAINST), cache_path=cache,
                          model="gpt-4o-mini", **PERSONA).requests == 12


def test_judge_errors_name_the_setting_and_the_fix(oai, tmp_path, monkeypatch):
    with pytest.raises(judge.JudgeError, match="OPENAI_API_KEY.*judge parameter False"):
        run(oai.base_url, tmp_path / "j.jsonl", model="m")
    with pytest.raises(judge.JudgeError, match="needs model=.*judge_model"):
        run(oai.base_url, tmp_path / "j.jsonl")
    with pytest.raises(judge.JudgeError, match="base_url='oai'"):
        run("oai", tmp_path / "j.jsonl", model="m")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    oai.add(status=403, times=-1)
    with pytest.raises(judge.ClaudeConfigError, match="HTTP 403.*Check OPENAI_API_KEY, base_url"):
        run(oai.base_url, tmp_path / "j.jsonl", model="m", concurrency=1)
    assert oai.count() == 1


def test_judged_in_batches_by_the_openai_batch_api(tmp_path, monkeypatch):
    """provider="openai", batch=True: one JSONL upload, one batch, its output file read into the
    same cache live requests use; a rerun asks nothing."""
    import openai

    from tests.support.fake_openai_batches import SDK_VERSION, FakeOpenAIBatches
    if openai.__version__ != SDK_VERSION:
        pytest.skip(f"the fake's batch endpoints answer openai {SDK_VERSION}'s calls")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    server = FakeOpenAIBatches().start()
    try:
        server.add(match="<answer_1>\nTuned", reply="WINNER: 1\nREASON: Hers.", times=-1)
        server.add(match="<answer_2>\nTuned", reply="WINNER: 2\nREASON: Hers.", times=-1)
        cache = tmp_path / "j.jsonl"
        res = run(server.base_url, cache, model="gpt-4o-mini", batch=True, poll_interval_s=0.01)
        assert res.complete and res.count("asked") == 12 and server.count() == 0
        assert server.count("files.create") == 1 and server.count("batches.create") == 1
        assert len(server.uploads[0]) == 12
        assert (res.table().set_index("variant").wins == 6).all()
        again = run(server.base_url, cache, model="gpt-4o-mini", batch=True, poll_interval_s=0.01)
        assert again.count("cache") == 12 and server.count("batches.create") == 1
    finally:
        server.stop()
