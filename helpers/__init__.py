"""FineTuning helpers: the code behind the notebooks.

One noun per module:

- ``models``     the model registry, smoke mode and model loading
- ``standins``   tiny offline stand-in models of each family
- ``data``       loading and validating prompt/completion and chat JSONL
- ``passage``    a passage of a book (text, pages, chapter, sha256)
- ``pdf``        books to cleaned, overlapping passages
- ``qa``         synthetic questions per passage (cached, concurrent, resumable)
- ``recipes``    V1/V2 training sets, held-out chapters, dedupe, length reports
- ``persona``    ``NoteBooks/<Persona>/persona.toml``
- ``dataprep``   the data-preparation steps of a persona
- ``memory``     free-memory checks and the out-of-memory fallback ladder
- ``autoconfig`` memory settings chosen from free memory and token lengths, with reasons
- ``export``     adapter, merged 16-bit and GGUF exports, each reloaded and checked
- ``templates``  chat rendering and response-only loss masks
- ``train``      LoRA training with Unsloth or transformers + PEFT + TRL
- ``generate``   batched answers from a base model or base + adapter
- ``runrecord``  ``outputs/<run>/run.json``: parameters, versions, hardware, timings, metrics
- ``evaluate``   fact recall and other scores
- ``plots``      loss curves (live in a notebook, saved to disk)
- ``finetune``   the command line (``python -m helpers.finetune``)

Importing ``helpers`` is cheap: nothing here imports torch until a function needs it.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
