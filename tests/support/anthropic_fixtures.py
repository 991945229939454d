"""pytest fixtures shared by the tests that talk to the fake Anthropic API (tests/support/fake_anthropic.py).
Import them into a test module: ``from tests.support.anthropic_fixtures import FAKE_KEY, client, fake, no_credentials``."""

from __future__ import annotations

import anthropic
import pytest

from helpers.claude import client as claude_client
from tests.support.fake_anthropic import FakeAnthropic

#: a key shaped like a real one, so tests can check it never leaks into logs, caches or errors
FAKE_KEY = "sk-ant-FAKE-KEY-d0-not-leak-7f3a9c"


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch):
    """Nothing from the developer's environment or .env files leaks into these tests."""
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(claude_client, "_dotenv_files", lambda: [])


@pytest.fixture
def fake():
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    return anthropic.Anthropic(api_key=FAKE_KEY, base_url=fake.url, max_retries=0, timeout=10)
