"""Claude requests shared by the question generator and the judge: client, pricing, requests, cache."""
