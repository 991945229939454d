"""Fakes and fixtures the tests share (a loopback fake Anthropic server, label capture, a resumable run)."""
