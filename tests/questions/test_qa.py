"""helpers.qa: synthetic questions, tested against a fake Messages API on loopback (no key, no
network). Every paid-path promise is checked: retries, failures named, content-keyed cache,
zero calls on a rerun, torn-line repair, SIGKILL and resume, budget, batches, the verbatim check,
the no-key path and that the key never leaks."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anthropic
import pytest

from helpers.books.passage import Passage
from helpers.claude import client as claude_client
from helpers.claude.cache import read_sidecar, sidecar_path
from helpers.questions import generate as qa
from helpers.questions import local
from tests.support.anthropic_fixtures import FAKE_KEY, client, fake, no_credentials  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]


def make_passages(k: int, tag: str = "") -> list[Passage]:
    return [Passage(text=f"Passage {i}{tag}. The Lighthouse of Varn stood over the harbour, and "
                         f"Mariya counted {i} boats coming home before the storm.",
                    book="harbour_tales", first_page=i + 1, last_page=i + 2, index=i)
            for i in range(k)]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def gen(passages, cache, client, **kw):
    kw.setdefault("retry_base_s", 0.01)
    kw.setdefault("progress", False)
    return qa.generate_questions(passages, cache, client=client, **kw)


# -- parsing --------------------------------------------------------------------------------

def test_parse_questions_tolerates_fences_and_prose_but_not_wrong_shapes():
    assert qa.parse_questions('["A?", "B?"]', 2) == ["A?", "B?"]
    assert qa.parse_questions('```json\n[" A? ", "B?"]\n```', 2) == ["A?", "B?"]
    assert qa.parse_questions('Sure! [1] is not it, here: ["A?", "B?"] Enjoy.', 2) == ["A?", "B?"]
    for bad, why in [("Two fine questions, in prose.", "no JSON array"),
                     ('["A?", "B?", "C?"]', "expected 2 questions, got 3"),
                     ('["A?", "  "]', "empty"), ('["A?", "a?"]', "same question twice"),
                     ('["A?", 3]', "other than strings"), ('["A?", "B?"', "no JSON array")]:
        with pytest.raises(qa.MalformedReply, match=why):
            qa.parse_questions(bad, 2)


def test_rule_questions_are_deterministic_distinct_and_from_the_text():
    p = make_passages(1)[0]
    qs = qa.rule_questions(p, 5)
    assert qs == qa.rule_questions(p, 5)
    assert len(set(qs)) == 5 and all(q.endswith("?") for q in qs)
    assert qs[0] == "What does the author say about Lighthouse of Varn?"
    assert any("Mariya" in q for q in qs)
    short = Passage(text="It was.", book="b", first_page=1, last_page=1)
    assert len(set(qa.rule_questions(short, 4))) == 4


# -- retries and failures -------------------------------------------------------------------

def test_transient_errors_are_retried_counted_and_retry_after_honoured(fake, tmp_path):
    # a client with the SDK's default retries (2): they are turned off, every retry is ours
    client = anthropic.Anthropic(api_key=FAKE_KEY, base_url=fake.url, timeout=10)
    assert client.max_retries == 2
    ps = make_passages(8)
    fake.add(status=429, retry_after="0.4", match="Passage 0.")
    fake.add(status=529, match="Passage 1.")
    fake.add(status=500, match="Passage 2.")
    fake.add(drop=True, match="Passage 3.")                 # connection closed, no reply
    fake.add(delay=1.5, match="Passage 4.")                 # longer than the client timeout
    res = gen(ps, tmp_path / "c.jsonl", client, timeout_s=0.5, concurrency=4)
    assert res.complete and res.asked == 8 and not res.failed
    assert res.attempt_errors == {"429": 1, "529": 1, "500": 1, "connection": 1, "timeout": 1}
    assert fake.count() == 8 + 5
    assert res.usage["requests"] == 8 + 5
    t = [e["time"] for e in fake.log if "Passage 0." in e["text"]]
    assert len(t) == 2 and t[1] - t[0] >= 0.4              # waited what retry-after said
    assert len(res.records) == 16


def test_malformed_replies_are_asked_again_then_recorded_as_failed(fake, client, tmp_path,
                                                                    caplog):
    ps = make_passages(6)
    fake.add(reply="count", match="Passage 1.")             # once wrong, then fine
    fake.add(reply="prose", match="Passage 4.", times=-1)   # never usable
    fake.add(reply="fenced", match="Passage 2.")            # fine: fences are tolerated
    with caplog.at_level(logging.WARNING):
        res = gen(ps, tmp_path / "c.jsonl", client)
    assert fake.count() == 6 + 1 + 2                        # passage 4: 3 attempts in all
    assert res.asked == 5 and not res.complete
    assert [(sha, reason.split(":")[0]) for sha, _, reason in res.failed] == [
        (ps[4].sha256, "malformed reply 3 times")]
    assert res.failed[0][1] == "harbour_tales"
    assert ps[4].sha256[:12] in res.summary() and "harbour_tales p.5-6" in caplog.text
    done = {r["passage_sha256"] for r in lines(tmp_path / "c.jsonl")}
    assert done == {p.sha256 for p in ps} - {ps[4].sha256}  # the others were saved


def test_a_400_fails_only_its_passage_and_a_401_stops_the_run(fake, client, tmp_path):
    ps = make_passages(4)
    fake.add(status=400, match="Passage 2.")
    res = gen(ps, tmp_path / "a.jsonl", client)
    assert [s for s, _, _ in res.failed] == [ps[2].sha256] and "HTTP 400" in res.failed[0][2]
    assert fake.count() == 4 and res.asked == 3             # a 400 is not retried

    fake.add(status=401, times=-1)
    with pytest.raises(qa.QAError, match="refused.*ANTHROPIC_API_KEY") as e:
        gen(make_passages(5, "b"), tmp_path / "b.jsonl", client, concurrency=1)
    assert FAKE_KEY not in str(e.value)
    assert fake.count() == 4 + 1                            # stopped at the first 401


def test_requests_really_run_concurrently(client, fake, tmp_path):
    fake.latency = 0.2
    t0 = time.monotonic()
    res = gen(make_passages(16), tmp_path / "c.jsonl", client, concurrency=8)
    assert res.asked == 16
    assert time.monotonic() - t0 < 1.2                      # serial would take 3.2 s


# -- the cache ------------------------------------------------------------------------------

def test_rerun_asks_nothing_and_returns_the_same_records(fake, client, tmp_path):
    ps = make_passages(5) + make_passages(1)                # a duplicate text is asked once
    first = gen(ps, tmp_path / "c.jsonl", client)
    assert fake.count() == 5 and first.asked == 5
    again = gen(ps, tmp_path / "c.jsonl", client)
    assert fake.count() == 5                                 # zero API calls
    assert again.asked == 0 and again.reused == 5 and again.usage["requests"] == 0
    assert [r["question"] for r in again.records] == [r["question"] for r in first.records]
    assert qa.verify_verbatim(again.records, ps) == 10


def test_cache_is_keyed_by_content_prompt_version_and_n(fake, client, tmp_path):
    cache = tmp_path / "c.jsonl"
    ps = make_passages(5)
    gen(ps, cache, client)
    before = cache.read_text()
    changed = ps[:3] + [Passage(text=p.text + " Rechunked.", book=p.book, first_page=p.first_page,
                                last_page=p.last_page, index=p.index) for p in ps[3:]]
    res = gen(changed, cache, client)
    assert fake.count() == 5 + 2 and res.asked == 2 and res.reused == 3
    assert cache.read_text().startswith(before)              # old records untouched
    assert {r["answer"] for r in res.records} == {p.text for p in changed}

    res = gen(ps, cache, client, prompt_version="q-other")
    assert fake.count() == 7 + 5 and res.asked == 5          # a new prompt: asked again
    assert gen(ps, cache, client).asked == 0                 # the old version is still served
    res = gen(ps, cache, client, n=3)
    assert fake.count() == 12 + 5 and all(len(
        [r for r in res.records if r["passage_sha256"] == p.sha256]) == 3 for p in ps)
    assert fake.count() == 17 and gen(ps, cache, client, n=3).asked == 0


def test_a_torn_last_line_is_cut_off_with_a_warning(fake, client, tmp_path, caplog):
    cache = tmp_path / "c.jsonl"
    ps = make_passages(5)
    gen(ps[:4], cache, client)
    # a crash in the middle of writing passage 4's group: one line whole, the next cut short
    group = qa.Job(n=2, model=qa.DEFAULT_MODEL, prompt_version=qa.PROMPT_VERSION,
                   source="anthropic").records(ps[4], ["Q one?", "Q two?"])
    whole, torn = json.dumps(group[0]) + "\n", json.dumps(group[1])
    with open(cache, "a") as f:
        f.write(whole + torn[:len(torn) // 2])
    good = len(cache.read_bytes()) - len(whole) - len(torn) // 2
    with caplog.at_level(logging.WARNING):
        res = gen(ps, cache, client)
    assert "cut" in caplog.text and str(cache) in caplog.text
    assert fake.count() == 4 + 1 and res.asked == 1 and res.reused == 4
    recs = lines(cache)                                       # every line is JSON again
    assert len(recs) == 10 and "Q one?" not in {r["question"] for r in recs}
    assert len({(r["passage_sha256"], r["q_index"]) for r in recs}) == 10
    assert cache.read_bytes()[good - 1:good] == b"\n"

    garbage = b'{"question": "garbage\n'                       # an unreadable last line
    with open(cache, "ab") as f:
        f.write(garbage)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert gen(ps, cache, client).asked == 0
    assert f"cut {len(garbage)} bytes" in caplog.text and len(lines(cache)) == 10

    with open(cache, "a") as f:                               # half a line, nothing else
        f.write(torn[:20])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert gen(ps + make_passages(1, "new"), cache, client).asked == 1
    assert "cut 20 bytes" in caplog.text and len(lines(cache)) == 12


SCRIPT = textwrap.dedent("""
    import json, sys
    import anthropic
    from helpers.questions import generate as qa
    from helpers.books.passage import Passage
    url, data, cache = sys.argv[1:4]
    ps = [Passage.from_dict(d) for d in json.load(open(data))]
    client = anthropic.Anthropic(api_key="sk-test", base_url=url, max_retries=0)
    qa.generate_questions(ps, cache, client=client, concurrency=4, progress=False)
""")


def test_sigkill_part_way_then_resume_loses_and_duplicates_nothing(fake, client, tmp_path):
    fake.latency = 0.1
    ps = make_passages(40)
    data, cache, script = tmp_path / "p.json", tmp_path / "c.jsonl", tmp_path / "run.py"
    data.write_text(json.dumps([p.to_dict() for p in ps]))
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), fake.url, str(data), str(cache)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if cache.exists() and cache.read_text().count("\n") >= 16:   # 8 passages saved
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    saved_at_kill = len({r["passage_sha256"] for r in lines(cache)})
    asked_before = fake.count()
    assert 8 <= saved_at_kill < 40

    res = gen(ps, cache, client)
    recs = lines(cache)
    assert res.reused == saved_at_kill and res.asked == 40 - saved_at_kill and res.complete
    assert len(recs) == 80                                    # no duplicate, none lost
    assert len({(r["passage_sha256"], r["q_index"]) for r in recs}) == 80
    assert {r["passage_sha256"] for r in recs} == {p.sha256 for p in ps}
    assert qa.verify_verbatim(recs, ps) == 80
    # what was lost is at most the requests in flight at the kill
    assert fake.count() - 40 <= asked_before - saved_at_kill <= 4
    assert fake.count() < 2 * 40


# -- budget and estimate --------------------------------------------------------------------

def test_estimate_counts_only_what_is_not_cached_at_list_prices(fake, client, tmp_path):
    ps = make_passages(10)
    est = qa.estimate(ps, 2)
    tin, tout = qa.request_tokens(ps[0], 2)
    assert est.requests == 10 and est.cached == 0 and tin > len(ps[0].text) // 4
    assert est.usd == pytest.approx((est.input_tokens * 1.0 + est.output_tokens * 5.0) / 1e6)
    assert qa.estimate(ps, 2, batch=True).usd == pytest.approx(est.usd / 2)
    assert "list prices" in str(est) and "check" in str(est)
    gen(ps[:4], tmp_path / "c.jsonl", client)
    est2 = qa.estimate(ps, 2, cached=tmp_path / "c.jsonl")
    assert (est2.requests, est2.cached) == (6, 4)
    assert qa.estimate(ps, 2, cached={p.sha256 for p in ps[:7]}).requests == 3
    assert qa.estimate(ps, 2, model="some-unknown-model").usd is None
    with pytest.raises(qa.QAConfigError, match="price_per_mtok"):
        gen(ps, tmp_path / "d.jsonl", client, model="some-unknown-model", budget_usd=1.0)


def test_budget_stops_cleanly_and_a_later_run_finishes(fake, client, tmp_path):
    probe = gen(make_passages(1, "probe"), tmp_path / "probe.jsonl", client)
    per_request = probe.cost_usd
    budget = 6.5 * per_request
    ps = make_passages(20)
    cache = tmp_path / "c.jsonl"
    res = gen(ps, cache, client, concurrency=2, budget_usd=budget)
    asked = fake.count() - 1
    assert res.stopped_by_budget and not res.failed and not res.complete
    assert res.cost_usd <= budget
    assert 3 <= res.asked == asked < 20                     # no request went unsaved
    assert res.not_asked == 20 - res.asked
    assert len(lines(cache)) == 2 * res.asked
    assert "budget reached" in res.summary()
    rest = gen(ps, cache, client)
    assert rest.asked == 20 - res.asked and rest.complete and fake.count() == 21


# -- batches --------------------------------------------------------------------------------

def test_batch_mode_submits_once_resumes_polling_and_retries_malformed(fake, client, tmp_path):
    ps = make_passages(6)
    cache = tmp_path / "c.jsonl"
    fake.add(reply="count", match="Passage 3.")             # one malformed result
    first = gen(ps, cache, client, batch=True, batch_wait=False)
    assert fake.count("batches.create") == 1 and fake.count() == 0
    assert first.not_asked == 6 and len(first.batches) == 1 and not first.complete
    side = read_sidecar(cache)
    assert side["batches"][0]["id"] == first.batches[0]
    assert set(side["batches"][0]["passages"]) == {p.sha256 for p in ps}

    res = gen(ps, cache, client, batch=True, poll_interval_s=0.01)
    # the rerun resumed the submitted batch (no second submission of the same passages) and
    # sent only the malformed one again, in a batch of one
    sizes = [e["size"] for e in fake.log if e["route"] == "batches.create"]
    assert sizes == [6, 1]
    assert res.complete and res.asked == 6 and res.attempt_errors == {"malformed": 1}
    assert res.usage["requests"] == 7                        # messages billed: 6 + 1 again
    assert qa.verify_verbatim(res.records, ps) == 12
    assert all(b["status"] == "collected" for b in read_sidecar(cache)["batches"])
    assert res.cost_usd == pytest.approx(0.5 * (res.usage["input_tokens"] * 1.0
                                                + res.usage["output_tokens"] * 5.0) / 1e6)
    assert {r["batch_id"] for r in res.records} <= set(b["id"] for b in
                                                      read_sidecar(cache)["batches"])
    polls = fake.count("batches.retrieve")
    again = gen(ps, cache, client, batch=True, poll_interval_s=0.01)
    assert again.reused == 6 and fake.count("batches.create") == 2
    assert fake.count("batches.retrieve") == polls and fake.count() == 0


# -- checks, sources, credentials -----------------------------------------------------------

def test_verify_verbatim_catches_a_changed_answer(fake, client, tmp_path):
    ps = make_passages(3)
    recs = gen(ps, tmp_path / "c.jsonl", client).records
    assert qa.verify_verbatim(recs, ps) == 6
    bad = [dict(r) for r in recs]
    bad[3]["answer"] = bad[3]["answer"].replace("boats", "boots")
    with pytest.raises(qa.VerbatimError, match=r"record 3 \(harbour_tales p.2-3.*character"):
        qa.verify_verbatim(bad, ps)
    with pytest.raises(qa.VerbatimError, match="not among the passages"):
        qa.verify_verbatim(recs, ps[:1])


def test_without_a_key_anthropic_says_what_to_do_and_rule_works(fake, tmp_path):
    ps = make_passages(4)
    with pytest.raises(qa.QAConfigError) as e:
        qa.generate_questions(ps, tmp_path / "c.jsonl", progress=False)
    msg = str(e.value)
    assert "ANTHROPIC_API_KEY" in msg and 'qa_source="rule"' in msg and '"local"' in msg
    assert fake.count() == 0
    res = qa.generate_questions(ps, tmp_path / "c.jsonl", source="rule", n=3, progress=False)
    assert res.complete and res.source == "rule" and res.cost_usd == 0.0
    assert {(r["source"], r["model"]) for r in res.records} == {("rule", qa.RULE_MODEL)}
    assert len(res.records) == 12 and qa.verify_verbatim(res.records, ps) == 12
    assert qa.generate_questions(ps, tmp_path / "c.jsonl", source="rule", n=3,
                                 progress=False).reused == 4
    with pytest.raises(qa.QAConfigError, match="Unknown qa source 'claude'.*rule"):
        qa.generate_questions(ps, tmp_path / "c.jsonl", source="claude")
    with pytest.raises(qa.QAConfigError, match="local_model"):
        qa.generate_questions(ps, tmp_path / "c.jsonl", source="local")


def test_key_from_a_dotenv_file(fake, tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text(f"# secrets\nexport ANTHROPIC_API_KEY='{FAKE_KEY}'\n"
                   f"ANTHROPIC_BASE_URL={fake.url}\n")
    monkeypatch.setattr(claude_client, "_dotenv_files", lambda: [tmp_path / "missing", env])
    res = qa.generate_questions(make_passages(2), tmp_path / "c.jsonl", progress=False)
    assert res.asked == 2 and fake.count() == 2 and all(e["auth"] for e in fake.log)
    assert "ANTHROPIC_API_KEY" not in os.environ             # read, not exported


def test_the_key_never_appears_in_logs_cache_results_or_errors(fake, tmp_path, monkeypatch,
                                                               caplog):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    ps = make_passages(6)
    fake.add(status=500, match="Passage 0.", echo_auth=True)
    fake.add(status=400, match="Passage 1.", echo_auth=True)   # an error that quotes the key
    fake.add(reply="prose", match="Passage 2.", times=-1)
    cache = tmp_path / "c.jsonl"
    with caplog.at_level(logging.DEBUG):                     # SDK and httpx debug logs too
        res = qa.generate_questions(ps, cache, retry_base_s=0.01, progress=False)
        fake.add(status=401, times=-1, echo_auth=True)
        with pytest.raises(qa.QAError) as e:
            qa.generate_questions(make_passages(2, "x"), cache, progress=False)
        batch = qa.generate_questions(make_passages(2, "y"), cache, batch=True,
                                      batch_wait=False, progress=False)
    assert len(res.failed) == 2 and len(batch.batches) == 1
    assert "[redacted]" in res.failed[0][2] + res.failed[1][2] and "[redacted]" in str(e.value)
    assert fake.log and all(e["auth"] for e in fake.log)    # the key was really sent
    assert len(caplog.records) > 10
    for text in (caplog.text, cache.read_text(), sidecar_path(cache).read_text(), str(res),
                 repr(res), res.summary(), str(res.failed), str(e.value), repr(e.value)):
        assert FAKE_KEY not in text
        assert FAKE_KEY[8:24] not in text


def test_local_source_uses_the_model_and_falls_back_to_rule(tmp_path, monkeypatch):
    ps = make_passages(3)
    seen = []

    def fake_generate(local_model, prompts, max_new_tokens, system_prompt=qa.SYSTEM_PROMPT):
        seen.extend(prompts)
        return ['Here: ["What did Mariya count?", "Where was the Lighthouse of Varn?"]',
                "the model rambled without an array", '```json\n["A?", "B?"]\n```'][:len(prompts)]
    monkeypatch.setattr(local, "local_generate", fake_generate)
    model = type("M", (), {"name_or_path": "tiny-test-model"})()
    res = qa.generate_questions(ps, tmp_path / "c.jsonl", source="local",
                                local_model=(model, None), progress=False)
    assert seen == [qa.build_prompt(p, 2) for p in ps]       # the same instruction as the API
    assert [r["source"] for r in res.records] == ["local", "local", "rule", "rule", "local",
                                                  "local"]
    assert res.records[0]["question"] == "What did Mariya count?"
    assert res.records[2]["question"] == qa.rule_questions(ps[1], 2)[0]
    assert "malformed" in res.records[2]["fallback_reason"]
    assert {r["model"] for r in res.records} == {"local:tiny-test-model"}
    assert res.complete and qa.verify_verbatim(res.records, ps) == 6


@pytest.mark.slow
def test_local_source_with_a_real_stand_in_model(tmp_path, random_standin):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = random_standin("qwen2.5")
    local = (AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))
    ps = make_passages(2)
    res = qa.generate_questions(ps, tmp_path / "c.jsonl", source="local", local_model=local,
                                max_tokens=8, progress=False)
    # random weights write no JSON: every passage falls back to rule, labelled so
    assert res.complete and {r["source"] for r in res.records} == {"rule"}
    assert {r["model"] for r in res.records} == {f"local:{path}"}
    assert qa.verify_verbatim(res.records, ps) == 4


def test_two_pass_generates_labelled_answers_and_caches_both_passes(fake, client, tmp_path):
    text = "I grew up by the sea. My father fixed boats, and he taught me patience. " * 5
    res = qa.two_pass(text, tmp_path / "t.jsonl", n=3, client=client)
    assert fake.count() == 1 + 3 and res.asked == 3
    assert len(res.records) == 3
    assert {(r["answer_source"], r["kind"]) for r in res.records} == {("generated", "two_pass")}
    assert all(r["answer"].startswith("I would say this about") for r in res.records)
    assert qa.verify_verbatim(res.records, []) == 0          # not verbatim, and labelled so
    again = qa.two_pass(text, tmp_path / "t.jsonl", n=3, client=client)
    assert fake.count() == 4 and again.reused == 3
    assert [r["answer"] for r in again.records] == [r["answer"] for r in res.records]
    with pytest.raises(qa.QAConfigError, match="two_pass"):
        qa.two_pass(text, tmp_path / "t.jsonl", source="rule")


# -- command line ---------------------------------------------------------------------------

@pytest.fixture
def fake_pdf(monkeypatch):
    """helpers.pdf's loader (a colleague's module), as helpers.qa imported it, replaced by a stub
    that returns our passages."""
    monkeypatch.setattr(qa, "load_passages", lambda folder: make_passages(3))


def test_cli_exit_status(fake, tmp_path, monkeypatch, fake_pdf, capsys):
    books = tmp_path / "books"
    books.mkdir()
    cache = tmp_path / "c.jsonl"
    base = ["--books", str(books), "--cache", str(cache)]
    assert qa.main(base + ["--source", "rule"]) == 0
    assert len(lines(cache)) == 6
    assert qa.main(base) == 2                                # anthropic without a key
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().out
    assert qa.main(["--books", str(tmp_path / "nope"), "--source", "rule"]) == 2
    with pytest.raises(SystemExit) as e:
        qa.main(base + ["--source", "nonsense"])
    assert e.value.code == 2

    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    fake.add(status=400, match="Passage 1.")
    assert qa.main(base + ["--estimate-only"]) == 0 and fake.count() == 0
    assert "3 requests" in capsys.readouterr().out
    assert qa.main(base + ["--concurrency", "2"]) == 1      # one passage failed
    out = capsys.readouterr().out
    assert "1 failed" in out and make_passages(3)[1].sha256[:12] in out
    assert qa.main(base) == 0 and fake.count() == 4          # rerun: only the failed one
    assert FAKE_KEY not in out


def test_cli_as_a_module_with_the_real_passage_loader(tmp_path):
    pytest.importorskip("helpers.pdf")
    books = tmp_path / "books"
    books.mkdir()
    (books / "notes.md").write_text(" ".join(
        f"Mariya kept the lamp of Varn burning through night {i} of the long winter."
        for i in range(60)))
    cache = tmp_path / "c.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["HOME"] = str(tmp_path)                              # no ~/.env
    run = lambda *a: subprocess.run([sys.executable, "-m", "helpers.qa", "--books", str(books),
                                     "--cache", str(cache), *a], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=120)
    if (ROOT / ".env").exists():
        pytest.skip("a .env in the project root could hold a key")
    p = run()
    assert p.returncode == 2 and "ANTHROPIC_API_KEY" in p.stdout and not cache.exists()
    p = run("--source", "rule")
    assert p.returncode == 0, p.stdout + p.stderr
    recs = lines(cache)
    assert recs and {r["source"] for r in recs} == {"rule"} and "0 failed" in p.stdout
