"""Shared plumbing every stage may use: paths, files, time, figures."""
