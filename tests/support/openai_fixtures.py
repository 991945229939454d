"""pytest fixtures for the tests that talk to the fake OpenAI-compatible server
(tests/support/fake_openai.py). Import them into a test module:
``from tests.support.openai_fixtures import OPENAI_KEY, oai, no_openai_credentials``."""

from __future__ import annotations

import pytest

from helpers.claude import client as claude_client
from tests.support.fake_openai import FakeOpenAI

#: a key shaped like a real one, so tests can check it never leaks into logs, caches or errors
OPENAI_KEY = "sk-proj-FAKE-KEY-d0-not-leak-4b1e7d"


@pytest.fixture(autouse=True)
def no_openai_credentials(monkeypatch):
    """Nothing from the developer's environment or .env files leaks into these tests."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(claude_client, "_dotenv_files", lambda: [])


@pytest.fixture
def oai():
    server = FakeOpenAI().start()
    yield server
    server.stop()
