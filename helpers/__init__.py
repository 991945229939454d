"""FineTuning helpers: the code behind the notebooks, one subpackage per stage.

Imports run one way, down this list (a module imports only from its own stage or those above;
tests/test_house.py checks it):

- ``core``        paths (root, work folder, run folders), files, time, figures
- ``models``      the registry and smoke mode (``__init__``), families, tiny offline stand-ins
- ``runtime``     the machine: GPU memory, processes, loading a model onto it (backends)
- ``books``       books to cleaned, overlapping passages
- ``claude``      Claude requests shared by questions and the judge: client, requests, cache
- ``questions``   synthetic questions per passage (Claude, a local model or rules)
- ``data``        prompt/completion and chat JSONL (``__init__``), recipes, personas, data prep
- ``training``    settings (config), masks, trainer, fallback ladder, auto-configuration, run record
- ``evaluation``  generation, metrics, the comparison (cache, plots), the judge, fact recall
- ``export``      adapter, merged 16-bit, GGUF and Ollama exports, each reloaded and checked
- ``pipeline``    one fine-tuning run end to end and its command line
- ``notebooks``   building and running notebooks (``__init__``), notebook setup, sweeps, demo

Modules that moved keep their old names (``helpers.pdf``, ``helpers.templates``,
``python -m helpers.finetune``, ...): :data:`MOVED` maps each to where it lives now, and
importing the old name gives the same module object.

Importing ``helpers`` is cheap: nothing here imports torch until a function needs it.
"""

import importlib
import importlib.abc
import importlib.util
import logging
import sys

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: old module name -> where it lives now
MOVED = {
    "plots": "helpers.core.figures",
    "standins": "helpers.models.standins",
    "memory": "helpers.runtime.memory",
    "passage": "helpers.books.passage",
    "pdf": "helpers.books.pdf",
    "qa_cache": "helpers.claude.cache",
    "qa_api": "helpers.claude.requests",
    "qa": "helpers.questions.generate",
    "recipes": "helpers.data.recipes",
    "persona": "helpers.data.persona",
    "dataprep": "helpers.data.prep",
    "templates": "helpers.training.masks",
    "train": "helpers.training.trainer",
    "trl_compat": "helpers.training.trl_compat",
    "autoconfig": "helpers.training.autoconfig",
    "runrecord": "helpers.training.runrecord",
    "generate": "helpers.models.generate",
    "evaluate": "helpers.evaluation.recall",
    "metrics": "helpers.evaluation.metrics",
    "compare_cache": "helpers.evaluation.cache",
    "compare_plots": "helpers.evaluation.plots",
    "judge": "helpers.evaluation.judge",
    "compare": "helpers.evaluation.compare",
    "finetune": "helpers.pipeline.finetune",
    "notebook": "helpers.notebooks.setup",
    "sweep": "helpers.notebooks.sweep",
    "demo": "helpers.notebooks.demo",
}


class _MovedLoader(importlib.abc.Loader):
    """Imports of an old name get the module at its new home (one object under both names);
    ``python -m helpers.<old>`` runs the new module's file as ``__main__``."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.own_spec   # the import system set the old name's spec on it

    def get_code(self, fullname):   # what runpy asks for under `python -m`
        spec = importlib.util.find_spec(self.target)
        return spec.loader.get_code(self.target)


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix != __name__ or name not in MOVED:
            return None
        target_spec = importlib.util.find_spec(MOVED[name])
        return importlib.util.spec_from_loader(fullname, _MovedLoader(MOVED[name]),
                                               origin=target_spec.origin if target_spec else None)


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
