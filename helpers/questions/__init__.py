"""Synthetic questions for passages (Claude, a local model or rules), cached."""
