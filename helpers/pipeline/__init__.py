"""The fine-tuning run end to end (FineTuneRun) and its command line."""
