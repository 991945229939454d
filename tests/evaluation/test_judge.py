"""helpers.judge: the blind pairwise LLM judge, against the fake Messages API on loopback."""

from __future__ import annotations

import pytest

from helpers.evaluation import judge
from tests.support.anthropic_fixtures import FAKE_KEY, client, fake, no_credentials  # noqa: F401 (fixtures)

PERSONA = {"persona_name": "Mariya",
           "persona_description": "You are Mariya, keeper of the harbour lamp. Speak plainly."}
PROMPTS = ["What do you do at night?", "Who taught you the lamp?", "What is the sea like?"]
# variant names that must never reach the judge
BASE, V1, V2 = "Zephyrmodel Base", "Zephyrmodel Vone", "Zephyrmodel Vtwo"
ANSWERS = {
    BASE: [f"Plain base answer {i}: the lamp is a device." for i in range(3)],
    V1: [f"Tuned one {i}: I climb the stairs and light the lamp for the boats." for i in range(3)],
    V2: [f"Tuned two {i}: my grandmother's lamp still burns over the harbour." for i in range(3)],
}
AGAINST = {BASE: BASE, V1: BASE, V2: BASE}          # what Comparison.bases() returns


def prefer_tuned(fake):
    """A judge that always prefers the tuned answer, wherever it is shown."""
    fake.add(match="<answer_1>\nTuned", reply="WINNER: 1\nREASON: It sounds like her.", times=-1)
    fake.add(match="<answer_2>\nTuned", reply="**WINNER:** 2\nREASON: Hers.", times=-1)


def judged(client, cache, **kw):
    kw.setdefault("retry_base_s", 0.01)
    return judge.run(judge.pairs(ANSWERS, PROMPTS, AGAINST), cache_path=cache, client=client,
                     **PERSONA, **kw)


def test_parse_verdict_tolerates_markdown_and_refuses_the_rest():
    assert judge.parse_verdict("WINNER: 2\nREASON: Closer.") == ("2", "Closer.")
    assert judge.parse_verdict("**Winner:** tie.\n") == ("tie", "")
    assert judge.parse_verdict("winner - Answer 1\nreason: voice")[0] == "1"
    for bad in ("I prefer the first.", "WINNER: 1 or 2", "WINNER: 1\nWINNER: 2", ""):
        with pytest.raises(judge.MalformedReply):
            judge.parse_verdict(bad)


def test_blind_both_orders_estimate_first_and_a_rerun_asks_nothing(fake, client, tmp_path):
    prefer_tuned(fake)
    pairs = judge.pairs(ANSWERS, PROMPTS, AGAINST)
    assert len(pairs) == 6 and {p.against for p in pairs} == {BASE}
    est = judge.estimate(pairs, cache_path=tmp_path / "j.jsonl", **PERSONA)
    assert fake.count() == 0                                  # the estimate asks nothing
    assert (est.judgements, est.requests, est.cached) == (12, 12, 0) and est.usd > 0
    assert "12 requests" in str(est) and "$" in str(est)

    res = judged(client, tmp_path / "j.jsonl")
    assert fake.count() == 12 and res.count("asked") == 12 and res.complete
    texts = [e["text"] for e in fake.log]
    for name in (BASE, V1, V2, "Zephyrmodel"):
        assert not any(name in t for t in texts)              # blind
    for variant in (V1, V2):
        for i in range(3):
            tuned, base = ANSWERS[variant][i], ANSWERS[BASE][i]
            assert sum(f"<answer_1>\n{tuned}" in t and f"<answer_2>\n{base}" in t
                       for t in texts) == 1
            assert sum(f"<answer_1>\n{base}" in t and f"<answer_2>\n{tuned}" in t
                       for t in texts) == 1
    used = res.usage["input_tokens"]
    assert abs(est.input_tokens - used) / used < 0.1          # the estimate is close

    table = res.table().set_index("variant")
    assert list(table.index) == [V1, V2]
    for v in (V1, V2):
        row = table.loc[v]
        assert (row.wins, row.losses, row.ties, row.invalid, row.not_judged) == (6, 0, 0, 0, 0)
        assert row.win_rate == 1.0 and row.consistency == 1.0 and row.position_bias == 0.5
        assert row.low == 1.0 and row.high == 1.0

    again = judged(None, tmp_path / "j.jsonl")               # no key needed: all cached
    assert fake.count() == 12 and again.count("cache") == 12 and again.usage["requests"] == 0
    assert again.table().equals(res.table())
    assert judge.estimate(pairs, cache_path=tmp_path / "j.jsonl", **PERSONA).requests == 0


def test_a_judge_that_always_says_1_shows_position_bias(fake, client, tmp_path):
    fake.add(reply="WINNER: 1\nREASON: The first one.", times=-1)
    row = judged(client, tmp_path / "j.jsonl").table().iloc[0]
    assert (row.wins, row.losses) == (3, 3)
    assert row.win_rate == 0.5 and row.position_bias == 1.0 and row.consistency == 0.0


def test_malformed_is_asked_once_more_then_counted_invalid(fake, client, tmp_path):
    fake.add(match=ANSWERS[V1][0], reply="Both are lovely.", times=-1)   # never usable
    fake.add(match=ANSWERS[V2][1], reply="Hmm.", times=1)                # once, then fine
    prefer_tuned(fake)
    res = judged(client, tmp_path / "j.jsonl")
    assert fake.count() == 12 + 2 + 1
    table = res.table().set_index("variant")
    assert table.loc[V1, "invalid"] == 2 and table.loc[V1, "wins"] == 4
    assert table.loc[V2, "invalid"] == 0 and table.loc[V2, "wins"] == 6
    assert table.loc[V1, "win_rate"] == 1.0                  # over the judgements that count
    assert res.attempt_errors == {"malformed": 3}
    frame = res.per_prompt()
    assert set(frame[frame.outcome == "invalid"].reason) == {"Both are lovely."}
    assert judged(client, tmp_path / "j.jsonl").count("cache") == 12 and fake.count() == 15


def test_identical_answers_are_a_tie_without_asking(fake, client, tmp_path):
    prefer_tuned(fake)
    answers = {**ANSWERS, V1: [ANSWERS[BASE][0], *ANSWERS[V1][1:]]}
    pairs = judge.pairs(answers, PROMPTS, AGAINST)
    assert judge.estimate(pairs, cache_path=tmp_path / "j.jsonl", **PERSONA).identical == 2
    res = judge.run(pairs, cache_path=tmp_path / "j.jsonl", client=client, **PERSONA)
    assert fake.count() == 10 and res.count("identical") == 2
    row = res.table().set_index("variant").loc[V1]
    assert (row.ties, row.wins) == (2, 4) and row.position_bias == 0.5
    assert row.win_rate == pytest.approx((0.5 + 1 + 1) / 3)


def test_budget_stops_cleanly_and_a_later_run_finishes(fake, client, tmp_path):
    prefer_tuned(fake)
    pairs = judge.pairs(ANSWERS, PROMPTS, AGAINST)
    price = (1000.0, 1000.0)                                 # $ per million tokens
    one = judge.estimate(pairs[:1], cache_path=tmp_path / "j.jsonl", price_per_mtok=price,
                         **PERSONA).usd / 2
    res = judge.run(pairs, cache_path=tmp_path / "j.jsonl", client=client, concurrency=1,
                    budget_usd=3.5 * one, price_per_mtok=price, **PERSONA)
    asked = fake.count()
    assert res.stopped_by_budget and 1 <= asked < 12 and not res.complete
    assert res.count("not asked") == 12 - asked and res.cost_usd <= 3.5 * one
    assert res.table().not_judged.sum() == 12 - asked and "budget reached" in res.summary()
    rest = judge.run(pairs, cache_path=tmp_path / "j.jsonl", client=client, **PERSONA)
    assert rest.complete and rest.count("asked") == 12 - asked and fake.count() == 12


def test_without_a_key_it_says_what_to_do(fake, tmp_path):
    with pytest.raises(judge.JudgeError) as e:
        judged(None, tmp_path / "j.jsonl")
    assert "ANTHROPIC_API_KEY" in str(e.value) and "judge parameter False" in str(e.value)
    assert fake.count() == 0


def test_pairs_errors_name_the_fix():
    with pytest.raises(judge.JudgeError, match="keep each base model"):
        judge.pairs({V1: ANSWERS[V1]}, PROMPTS, {V1: BASE})
    with pytest.raises(judge.JudgeError, match="2 answers for 3 prompts"):
        judge.pairs({**ANSWERS, V2: ANSWERS[V2][:2]}, PROMPTS, AGAINST)
    only_v2 = judge.pairs({BASE: ANSWERS[BASE], V2: ANSWERS[V2]}, PROMPTS, AGAINST)
    assert {p.variant for p in only_v2} == {V2}


def test_nothing_to_judge_is_fine_where_the_caller_says_so(tmp_path, caplog):
    """A comparison notebook run before any tuned model exists: no error, a line saying why."""
    import logging
    with caplog.at_level(logging.INFO, logger="helpers.evaluation.judge"):
        none = judge.pairs({BASE: ANSWERS[BASE]}, PROMPTS, {BASE: BASE, V1: BASE}, missing_ok=True)
    assert none == [] and "Run the fine-tuning notebooks" in caplog.text
    text = str(judge.estimate(none, cache_path=tmp_path / "j.jsonl", **PERSONA))
    assert text.startswith("LLM judge: nothing to judge") and "$" not in text


def test_batches_at_half_price_submit_once_resume_and_retry_malformed(fake, client, tmp_path):
    """batch=True: Message Batches at half the price; batch_wait=False submits and returns, a
    rerun collects that batch (nothing submitted twice) and sends only the malformed one again;
    the verdicts and the cache are the ones live requests give."""
    fake.add(match=ANSWERS[V2][1], reply="Hmm.", times=1)                # malformed once
    prefer_tuned(fake)
    cache = tmp_path / "j.jsonl"
    to_judge = judge.pairs(ANSWERS, PROMPTS, AGAINST)
    live = judge.estimate(to_judge, cache_path=cache, **PERSONA)
    assert judge.estimate(to_judge, cache_path=cache, batch=True, **PERSONA).usd == pytest.approx(live.usd / 2)
    first = judged(client, cache, batch=True, batch_wait=False)
    assert fake.count("batches.create") == 1 and fake.count() == 0 and len(first.batches) == 1
    assert first.count("not asked") == 12 and not first.complete
    assert "run again to collect" in first.summary()
    res = judged(client, cache, batch=True, poll_interval_s=0.01)
    assert [e["size"] for e in fake.log if e["route"] == "batches.create"] == [12, 1]
    assert res.complete and res.count("asked") == 12 and res.attempt_errors == {"malformed": 1}
    table = res.table().set_index("variant")
    assert (table.wins == 6).all() and (table.win_rate == 1.0).all()
    assert res.cost_usd == pytest.approx(0.5 * (res.usage["input_tokens"] * 1.0
                                                + res.usage["output_tokens"] * 5.0) / 1e6)
    again = judged(client, cache, batch=True, poll_interval_s=0.01)
    assert again.count("cache") == 12 and fake.count("batches.create") == 2
