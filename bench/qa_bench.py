"""How close question generation gets to the ideal wall time, on the fake Messages API.

The fake server (tests/support/fake_anthropic.py) runs in its own process and answers every request
after a fixed latency. For each concurrency the bench times ``helpers.qa.generate_questions`` on
N passages from an empty cache and compares it with the ideal ``N x latency / concurrency``;
beside it, the same number of bare ``client.messages.create`` calls from a thread pool (the SDK
alone, nothing saved) shows what the SDK itself costs. Then it reruns on the full cache and
counts the API calls (should be 0).

    .venv/bin/python bench/qa_bench.py [--passages 256] [--latency 0.1] [--concurrency 8 32]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anthropic  # noqa: E402

from helpers.books.passage import Passage  # noqa: E402
from helpers.questions import generate as qa  # noqa: E402


def passages(n: int) -> list[Passage]:
    body = ("The Lighthouse of Varn stood over the harbour, and Mariya counted the boats coming "
            "home before the storm. ") * 12          # about 200 words, like a real passage
    return [Passage(text=f"Passage {i}. {body}", book="bench", first_page=i, last_page=i, index=i)
            for i in range(n)]


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_fake/stats") as r:
        return json.load(r)


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/_fake/reset", data=b"{}",
                                                  method="POST")).read()


def bare_sdk(client, ps: list[Passage], concurrency: int) -> float:
    job = qa.Job(n=2, model=qa.DEFAULT_MODEL, prompt_version=qa.PROMPT_VERSION,
                 source="anthropic")
    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda p: client.messages.create(**job.params(p)), ps))
        return time.perf_counter() - t0


def timed_run(url, ps, cache, client, concurrency):
    """One question run against the fake server: (result, seconds, API calls it made)."""
    reset(url)
    t0 = time.perf_counter()
    res = qa.generate_questions(ps, cache, client=client, concurrency=concurrency, progress=False)
    return res, time.perf_counter() - t0, stats(url).get("messages", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    args = ap.parse_args()

    server = subprocess.Popen([sys.executable, str(ROOT / "tests/support/fake_anthropic.py"),
                               "--latency", str(args.latency)], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[1]
        client = anthropic.Anthropic(api_key="bench", base_url=url, max_retries=0, timeout=30)
        ps = passages(args.passages)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{args.passages} passages, fake API latency {args.latency * 1000:.0f} ms, "
              f"{os.cpu_count()} CPUs, load average {load:.1f} at start\n")
        print(f"{'conc':>4} {'ideal s':>8} {'qa s':>7} {'ideal/qa':>9} {'sdk s':>7} "
              f"{'ideal/sdk':>10} {'calls':>6} {'rerun s':>8} {'rerun calls':>12}")
        for c in args.concurrency:
            ideal = args.passages * args.latency / c
            bare_sdk(client, ps[:c], c)                        # warm the connection pool
            sdk = bare_sdk(client, ps, c)
            with tempfile.TemporaryDirectory() as tmp:
                cache = Path(tmp) / "bench.jsonl"
                res, wall, calls = timed_run(url, ps, cache, client, c)
                assert res.complete and res.asked == args.passages, res.summary()
                again, rerun, rerun_calls = timed_run(url, ps, cache, client, c)  # all cached
                assert again.reused == args.passages
            print(f"{c:4d} {ideal:8.2f} {wall:7.2f} {ideal / wall:9.2f} {sdk:7.2f} "
                  f"{ideal / sdk:10.2f} {calls:6d} {rerun:8.2f} {rerun_calls:12d}")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
