"""The fine-tuning run end to end (FineTuneRun) and its command line."""

# registers backend="tinker" (TinkerRun) with the command line and helpers.pipeline.runs
from helpers.pipeline import tinker_run  # noqa: F401,E402
