"""Training: settings, masks, trainer, fallback, auto-configuration, run record."""
