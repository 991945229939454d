"""End to end: notebooks executed with papermill/nbconvert, sweeps, multi-process and long runs (minutes)."""
