"""provider="openai": questions from any OpenAI-compatible server (the fake on loopback), through
our HTTP client and through an ``openai.OpenAI`` client, on the same engine as Anthropic."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.claude import client as claude_client
from helpers.claude import pricing
from helpers.claude.backends import HTTPBackend, SDKBackend, backend_for
from helpers.claude.providers import choose
from helpers.questions import generate as qa
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_fixtures import OPENAI_KEY, no_openai_credentials, oai  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]


def make_passages(k: int, tag: str = ""):
    return [qa.Passage(text=f"Passage {i}{tag}. The Lighthouse of Varn stood over the harbour, "
                            f"and Mariya counted {i} boats coming home before the storm.",
                       book="harbour_tales", first_page=i + 1, last_page=i + 2, index=i)
            for i in range(k)]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def ask(ps, cache, url, **kw):
    kw.setdefault("retry_base_s", 0.01)
    kw.setdefault("progress", False)
    kw.setdefault("model", "llama3.1")
    return qa.generate_questions(ps, cache, provider="openai", base_url=url, **kw)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)


def test_questions_by_json_schema_cached_per_server_beside_anthropic(oai, key, tmp_path):
    ps, cache = make_passages(4), tmp_path / "c.jsonl"
    res = ask(ps, cache, oai.base_url)
    assert res.complete and res.asked == 4 and oai.count() == 4
    assert res.source == "openai" and res.model == f"llama3.1 @ {oai.base_url}"
    body = oai.bodies[0]
    assert body["model"] == "llama3.1" and body["max_tokens"] == 64 * 2 + 64
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["properties"][
        "questions"]["maxItems"] == 2
    assert all(e["auth"] for e in oai.log)
    recs = lines(cache)
    assert {(r["source"], r["model"]) for r in recs} == {("openai", res.model)}
    assert qa.verify_verbatim(recs, ps) == 8 and res.cost_usd == 0.0   # unknown model: free

    assert ask(ps, cache, oai.base_url).reused == 4 and oai.count() == 4   # a rerun asks nothing
    assert qa.estimate(ps, 2, "llama3.1", cached=cache, provider="openai",
                       base_url=oai.base_url + "/").requests == 0
    with FakeOpenAI() as other:                     # another server: its own cache keys
        assert ask(ps, cache, other.base_url).asked == 4 and other.count() == 4
    with FakeAnthropic() as claude:                 # Anthropic's keys are unchanged: model alone
        res = qa.generate_questions(ps, cache, client=_anthropic(claude), progress=False)
        assert res.asked == 4 and {r["model"] for r in res.records} == {qa.DEFAULT_MODEL}
    assert len(lines(cache)) == 3 * 8


def _anthropic(server):
    import anthropic
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0)


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_a_server_without_json_schema_gets_plain_requests_and_tolerant_parsing(
        mode, key, tmp_path, caplog):
    with FakeOpenAI(schema=mode) as server, caplog.at_level(logging.WARNING):
        server.add(reply="fenced", match="Passage 1.")
        server.add(reply="wrapped", match="Passage 2.")
        res = ask(make_passages(5), tmp_path / "c.jsonl", server.base_url, concurrency=1)
        schema_sent = [e["schema"] for e in server.log]
    assert res.complete and res.asked == 5
    if mode == "refuse":                     # one refusal, then never again, counted
        assert schema_sent == [True] + [False] * 5 and res.attempt_errors == {"schema": 1}
        assert res.usage["requests"] == 6
        assert caplog.text.count("refused response_format") == 1
    else:
        assert all(schema_sent) and not res.attempt_errors


def test_transient_errors_are_retried_and_counted(oai, key, tmp_path):
    ps = make_passages(6)
    oai.add(status=429, retry_after="0.3", match="Passage 0.")
    oai.add(status=500, match="Passage 1.")
    oai.add(drop=True, match="Passage 2.")
    oai.add(delay=1.0, match="Passage 3.")
    oai.add(reply="prose", match="Passage 4.")
    res = ask(ps, tmp_path / "c.jsonl", oai.base_url, timeout_s=0.4, concurrency=3)
    assert res.complete and res.asked == 6
    assert res.attempt_errors == {"429": 1, "500": 1, "connection": 1, "timeout": 1,
                                  "malformed": 1}
    assert oai.count() == 6 + 5 and res.usage["requests"] == 6 + 5
    t = [e["time"] for e in oai.log if "Passage 0." in e["text"]]
    assert t[1] - t[0] >= 0.3


def test_an_openai_sdk_client_works_with_its_retries_off(oai, tmp_path):
    import openai
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=oai.base_url, timeout=10)
    assert client.max_retries == 2
    backend = backend_for(client, choose("anthropic"), 10)   # an openai client: openai
    assert isinstance(backend, SDKBackend) and backend.provider.openai
    assert backend.client.max_retries == 0
    oai.add(status=500, match="Passage 0.")
    oai.add(status=400, match="Passage 1.")
    res = ask(make_passages(3), tmp_path / "c.jsonl", oai.base_url, client=client)
    assert res.asked == 2 and [s for s, _, _ in res.failed] == [make_passages(3)[1].sha256]
    assert "HTTP 400" in res.failed[0][2] and res.attempt_errors == {"500": 1, "400": 1}
    assert oai.count() == 3 + 1


def test_without_a_key_the_error_names_openai_api_key_and_a_dotenv_key_works(oai, tmp_path,
                                                                            monkeypatch):
    with pytest.raises(qa.QAConfigError) as e:
        ask(make_passages(2), tmp_path / "c.jsonl", oai.base_url)
    assert "OPENAI_API_KEY" in str(e.value) and "any non-empty string" in str(e.value)
    assert oai.count() == 0
    env = tmp_path / ".env"
    env.write_text(f"OPENAI_API_KEY={OPENAI_KEY}\nOPENAI_BASE_URL={oai.base_url}\n")
    monkeypatch.setattr(claude_client, "_dotenv_files", lambda: [env])
    res = qa.generate_questions(make_passages(2), tmp_path / "c.jsonl", provider="openai",
                                model="m", progress=False)     # base URL from .env too
    assert res.asked == 2 and "OPENAI_API_KEY" not in os.environ


def test_settings_errors_name_the_setting_and_the_fix(oai, key, tmp_path):
    ps, cache = make_passages(2), tmp_path / "c.jsonl"
    with pytest.raises(qa.QAConfigError, match="base_url='localhost:11434/v1'.*http://localhost"):
        ask(ps, cache, "localhost:11434/v1")
    with pytest.raises(qa.QAConfigError, match="Unknown provider 'azure'.*anthropic, openai"):
        qa.generate_questions(ps, cache, provider="azure")
    with pytest.raises(qa.QAConfigError, match="needs model=.*gpt-4o-mini"):
        qa.generate_questions(ps, cache, provider="openai", base_url=oai.base_url)
    # a server without the Batch API (this fake, like Ollama, answers 404 on /files)
    with pytest.raises(qa.QAConfigError, match="batch=True: the server at base_url=.*no OpenAI "
                                               "Batch API.*batch=False"):
        ask(ps, cache, oai.base_url, batch=True)
    assert oai.count() == 0


def test_a_wrong_base_url_or_a_refusing_server_stops_the_run_naming_what_to_check(
        oai, key, tmp_path):
    ps = make_passages(3)
    with pytest.raises(qa.QAError, match=r"HTTP 404.*page not found.*Check OPENAI_API_KEY, "
                                         r"base_url \(http"):
        ask(ps, tmp_path / "a.jsonl", oai.url, concurrency=1)         # /v1 left out
    with pytest.raises(qa.QAError, match="did not answer like the openai API.*base_url"):
        ask(ps, tmp_path / "b.jsonl", oai.url + "/site", concurrency=1)   # a web page
    oai.add(status=401, times=-1, echo_auth=True)
    with pytest.raises(qa.QAError, match="refused.*HTTP 401") as e:
        ask(ps, tmp_path / "c.jsonl", oai.base_url, concurrency=1)
    assert OPENAI_KEY not in str(e.value) and "[redacted]" in str(e.value)
    assert oai.count() == 1                      # each stopped at its first request

    with socket.socket() as s:                                       # nothing listens there
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    res = ask(ps[:1], tmp_path / "d.jsonl", closed, max_retries=1)
    assert not res.complete and closed in res.failed[0][2]
    assert res.attempt_errors == {"connection": 2}


def test_the_key_never_appears_in_logs_cache_or_errors(oai, key, tmp_path, caplog):
    oai.add(status=500, match="Passage 0.", echo_auth=True)
    oai.add(status=400, match="Passage 1.", echo_auth=True)
    cache = tmp_path / "c.jsonl"
    with caplog.at_level(logging.DEBUG):
        res = ask(make_passages(3), cache, oai.base_url)
    assert len(res.failed) == 1 and "[redacted]" in res.failed[0][2]
    for text in (caplog.text, cache.read_text(), str(res), res.summary()):
        assert OPENAI_KEY not in text and OPENAI_KEY[9:25] not in text


def test_prices_known_openai_models_and_counts_others_as_free(caplog):
    assert pricing.prices_for("gpt-4o-mini-2024-07-18", provider="openai") == (0.15, 0.60)
    assert pricing.prices_for("gpt-4o", provider="openai") == (2.50, 10.00)
    assert pricing.prices_for("openai/gpt-4.1-mini", provider="openai") == (0.40, 1.60)
    with caplog.at_level(logging.INFO):
        assert pricing.prices_for("qwen3:8b-local-test", provider="openai") == (0.0, 0.0)
    assert "no list price known for 'qwen3:8b-local-test'" in caplog.text
    assert pricing.prices_for("qwen3:8b", price_per_mtok=(1, 2), provider="openai") == (1, 2)
    assert pricing.prices_for("gpt-4o") is None                  # not an Anthropic model
    est = qa.estimate(make_passages(3), 2, "gpt-4o-mini", provider="openai")
    assert est.usd > 0 and "gpt-4o-mini @ https://api.openai.com/v1" in str(est)


def test_our_http_client_is_the_default_and_the_sdk_is_used_behind_a_proxy(key, monkeypatch):
    prov = choose("openai", "http://127.0.0.1:1/v1")
    assert isinstance(backend_for(None, prov, 5), HTTPBackend)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    assert isinstance(backend_for(None, prov, 5), SDKBackend)


def test_cli_provider_openai(oai, key, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(qa, "load_passages", lambda folder: make_passages(3))
    books = tmp_path / "books"
    books.mkdir()
    base = ["--books", str(books), "--cache", str(tmp_path / "c.jsonl"), "--provider", "openai"]
    assert qa.main(base + ["--base-url", oai.base_url]) == 2           # no --model
    assert "needs model=" in capsys.readouterr().out
    assert qa.main(base + ["--base-url", "ftp://x", "--model", "m"]) == 2
    assert "base_url='ftp://x'" in capsys.readouterr().out
    assert qa.main(base + ["--base-url", oai.base_url, "--model", "llama3.1"]) == 0
    out = capsys.readouterr().out
    assert "3 requests to llama3.1 @ " in out and "3 asked" in out and oai.count() == 3


NO_OPENAI = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "openai" or name.startswith("openai."):
                raise ImportError("openai is not installed (blocked by the test)")
    sys.meta_path.insert(0, Block())
    from helpers.questions import generate as qa
    from helpers.evaluation import judge
    from tests.support.fake_anthropic import FakeAnthropic
    ps = [qa.Passage(text=f"Passage {i}. Mariya kept the lamp.", book="b", first_page=i,
                     last_page=i, index=i) for i in range(3)]
    with FakeAnthropic() as fake:
        import os
        os.environ["ANTHROPIC_API_KEY"], os.environ["ANTHROPIC_BASE_URL"] = "sk-ant-x", fake.url
        res = qa.generate_questions(ps, sys.argv[1], progress=False)
        assert res.complete and res.asked == 3, res.summary()
    assert "openai" not in sys.modules
    print("ok")
""")


def test_the_anthropic_path_needs_no_openai_package(tmp_path):
    p = subprocess.run([sys.executable, "-c", NO_OPENAI, str(tmp_path / "c.jsonl")], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
