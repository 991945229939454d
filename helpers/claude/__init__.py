"""The API plumbing shared by the question generator and the judge, for both providers
(Anthropic, and OpenAI-compatible servers; the name is historical): client (keys, errors),
providers (which API, base URL, cache-key names), backends (how a request is sent), pricing,
requests (the concurrent engine), cache."""
