"""How close question generation gets to the ideal wall time, on the fake APIs, process start
included: each run is a fresh Python process, timed from its start to its exit.

The fake servers (tests/support/fake_anthropic.py, tests/support/fake_openai.py) run in their own
processes and answer every request after a fixed latency. For each provider and concurrency the
bench times ``helpers.qa.generate_questions`` on N passages from an empty cache (our engine:
imports, key, threads, cache writes and all) and compares it with the ideal
``N x latency / concurrency``; beside it, a process that makes the same requests with the bare
SDK (``client.messages.create`` / ``client.chat.completions.create`` from a thread pool, nothing
saved). Then the engine reruns on the full cache: it must make no API call.

    .venv/bin/python bench/qa_bench.py [--passages 2048] [--latency 0.1] [--concurrency 8 32]
                                       [--providers anthropic openai]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PASSAGES = """
from helpers.books.passage import Passage
body = ("The Lighthouse of Varn stood over the harbour, and Mariya counted the boats coming "
        "home before the storm. ") * 12          # about 200 words, like a real passage
ps = [Passage(text=f"Passage {i}. {body}", book="bench", first_page=i, last_page=i, index=i)
      for i in range(N)]
"""

ENGINE = """
from helpers.questions import generate as qa
res = qa.generate_questions(ps, CACHE, concurrency=C, progress=False, provider=PROVIDER,
                            model=MODEL)
assert res.complete, res.summary()
print(res.asked, res.reused)
"""

SDK = """
from concurrent.futures import ThreadPoolExecutor
from helpers.questions.job import Job
from helpers.questions.prompts import PROMPT_VERSION
job = Job(n=2, model=MODEL, prompt_version=PROMPT_VERSION, source=PROVIDER)
if PROVIDER == "openai":
    import openai
    from helpers.claude.backends import openai_body
    client = openai.OpenAI(max_retries=0, timeout=30)
    call = lambda p: client.chat.completions.create(**openai_body(job.params(p), job.schema(),
                                                                   False))
else:
    import anthropic
    client = anthropic.Anthropic(max_retries=0, timeout=30)
    call = lambda p: client.messages.create(**job.params(p))
with ThreadPoolExecutor(C) as pool:
    list(pool.map(call, ps))
print(len(ps), 0)
"""

MODELS = {"anthropic": "claude-haiku-4-5-20251001", "openai": "gpt-4o-mini"}


def serve(provider: str, latency: float) -> tuple[subprocess.Popen, str]:
    script = "fake_openai.py" if provider == "openai" else "fake_anthropic.py"
    server = subprocess.Popen([sys.executable, str(ROOT / "tests/support" / script),
                               "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    return server, server.stdout.readline().split()[1]


def calls(url: str) -> int:
    root = url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_fake/stats") as r:
        n = json.load(r).get("messages", 0)
    urllib.request.urlopen(urllib.request.Request(f"{root}/_fake/reset", data=b"{}",
                                                  method="POST")).read()
    return n


def timed(code: str, provider: str, url: str, n: int, c: int, cache: Path) -> tuple[float, str]:
    """Seconds from the start of a fresh process running ``code`` to its exit."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    env.update(PYTHONPATH=str(ROOT), HOME=tempfile.gettempdir())
    if provider == "openai":
        env.update(OPENAI_API_KEY="bench", OPENAI_BASE_URL=url)
    else:
        env.update(ANTHROPIC_API_KEY="bench", ANTHROPIC_BASE_URL=url)
    head = (f"N, C, CACHE, PROVIDER, MODEL = {n}, {c}, {str(cache)!r}, {provider!r}, "
            f"{MODELS[provider]!r}\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", head + PASSAGES + code], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"the {provider} run failed:\n{p.stdout}{p.stderr}")
    return wall, p.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=2048)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--providers", nargs="+", default=["anthropic", "openai"],
                    choices=["anthropic", "openai"])
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.passages} passages, fake API latency {args.latency * 1000:.0f} ms, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at start; every run is a fresh "
          f"process, timed from its start to its exit\n")
    print(f"{'provider':>9} {'conc':>4} {'ideal s':>8} {'engine s':>9} {'ideal/engine':>13} "
          f"{'sdk s':>7} {'ideal/sdk':>10} {'calls':>6} {'rerun s':>8} {'rerun calls':>12}")
    for provider in args.providers:
        server, url = serve(provider, args.latency)
        try:
            for c in args.concurrency:
                ideal = args.passages * args.latency / c
                with tempfile.TemporaryDirectory() as tmp:
                    cache = Path(tmp) / "bench.jsonl"
                    sdk, _ = timed(SDK, provider, url, args.passages, c, cache)
                    calls(url)
                    wall, out = timed(ENGINE, provider, url, args.passages, c, cache)
                    made = calls(url)
                    assert out == f"{args.passages} 0", out
                    rerun, out = timed(ENGINE, provider, url, args.passages, c, cache)
                    again = calls(url)
                    assert out == f"0 {args.passages}", out
                print(f"{provider:>9} {c:4d} {ideal:8.2f} {wall:9.2f} {ideal / wall:13.2f} "
                      f"{sdk:7.2f} {ideal / sdk:10.2f} {made:6d} {rerun:8.2f} {again:12d}",
                      flush=True)
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
