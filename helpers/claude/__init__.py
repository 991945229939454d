"""Claude requests shared by the question generator and the judge: client, requests, cache."""
