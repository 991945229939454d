"""Which run class trains: :func:`start_run` starts a :class:`~helpers.pipeline.finetune.FineTuneRun`
(backend auto, unsloth, transformers or mlx: trained here) or, for ``backend="tinker"``, a
:class:`~helpers.pipeline.tinker_run.TinkerRun` (trained on Thinking Machines' service), so a
notebook switches with its ``backend`` parameter alone. Both offer the notebook's steps
(``load_data``, ``load_model``, ``ask``, ``fact_recall``, ``general_knowledge``, ``tokenize``,
``example_mask``, ``add_lora``, ``train``, ``finish``); ``python -m helpers.finetune --backend
tinker`` picks the class from the same table (:data:`helpers.pipeline.arguments.RUN_CLASSES`)."""

from __future__ import annotations

from helpers.pipeline.arguments import BACKENDS, RUN_CLASSES
from helpers.pipeline.finetune import FineTuneRun
from helpers.pipeline.tinker_run import TinkerRun

__all__ = ["BACKENDS", "FineTuneRun", "TinkerRun", "run_class", "start_run"]


def run_class(backend: str | None) -> type[FineTuneRun]:
    """The class that trains with ``backend`` (None: the profile's default, trained here)."""
    return RUN_CLASSES.get(backend or "", FineTuneRun)


def start_run(*, model: str, backend: str | None = None, **kwargs) -> FineTuneRun:
    """``FineTuneRun.start(model=..., backend=..., **kwargs)``, or ``TinkerRun.start`` for
    ``backend="tinker"`` (its own keywords, ``client``, ``rest``, ``tokenizer``, ``prices``, pass
    through). An unknown backend is refused by the training settings, naming the known ones."""
    return run_class(backend).start(model=model, backend=backend, **kwargs)
