"""What notebooks need around the pipeline: quiet logging, project paths, tables to display."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from helpers.core.paths import ROOT, WORKDIR_ENV, path, work_dir  # noqa: F401  (re-exported)
from helpers.runtime.loading import import_unsloth_first
from helpers.training.runrecord import hardware, package_versions

log = logging.getLogger(__name__)

#: modules whose Python warnings a notebook does not show (``warnings`` matches the module that
#: raised them)
THIRD_PARTY_WARNINGS = (r"(transformers|torch|trl|peft|accelerate|datasets|bitsandbytes|unsloth|"
                        r"unsloth_zoo|huggingface_hub|tokenizers|pandas|matplotlib|seaborn|papermill|"
                        r"jupyter_client|nbclient|tensorboard|sklearn)(\.|$)")



class UnknownParameterError(ValueError):
    """papermill was given a parameter the notebook's parameters cell does not define."""


def _assigned(source: str) -> list[str]:
    import ast
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_parameters(history: list[str] | None = None) -> None:
    """Refuse parameters the notebook does not have. papermill only warns about an unknown name
    and runs on with the default, so a typo (``-p learning_rat 1e-4``) would silently train with
    other settings. Reads the cells run so far: papermill's injected cell (it starts with
    ``# Parameters``) against the parameters cell run just before it."""
    if history is None:
        try:
            history = list(get_ipython().user_ns.get("In", []))  # noqa: F821 (IPython only)
        except NameError:
            return
    for i, cell in enumerate(history):
        if cell.lstrip().startswith("# Parameters") and i > 0:
            known = _assigned(history[i - 1])
            unknown = [n for n in _assigned(cell) if n not in known]
            if known and unknown:
                raise UnknownParameterError(
                    f"Unknown parameter(s) {', '.join(unknown)}: this notebook's parameters are "
                    f"{', '.join(known)}. Fix the name (papermill --help-notebook lists them).")


def setup(level: int = logging.INFO) -> Path:
    """Configure a notebook for readable output; returns the project root. Stops on a papermill
    parameter the notebook does not define (:func:`check_parameters`).

    helpers' own progress messages are shown; library chatter (transformers, datasets, httpx
    and the usual deprecation warnings) is not. Progress bars are left to the helpers' live plots.
    On a CUDA machine with Unsloth, Unsloth is imported here, before transformers
    (:func:`helpers.train.import_unsloth_first`).
    """
    check_parameters()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import_unsloth_first()  # before the transformers import below (and the notebook's own)
    root = logging.getLogger()
    if not any(getattr(h, "_finetuning", False) for h in root.handlers):
        # progress (below WARNING) is plain output; warnings and errors go to stderr, which
        # Jupyter shows in red: only what deserves it
        fmt = logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S")
        progress = logging.StreamHandler(sys.stdout)
        progress.addFilter(lambda record: record.levelno < logging.WARNING)
        problems = logging.StreamHandler(sys.stderr)
        problems.setLevel(logging.WARNING)
        for handler in (progress, problems):
            handler.setFormatter(fmt)
            handler._finetuning = True
            root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("helpers").setLevel(level)
    for noisy in ("transformers", "datasets", "httpx", "urllib3", "accelerate", "peft", "trl",
                  "torch", "unsloth", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # warnings raised inside third-party libraries are theirs to fix, not the reader's
    warnings.filterwarnings("ignore", module=THIRD_PARTY_WARNINGS)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    warnings.filterwarnings("ignore", message=".*padding_side.*")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return ROOT


def environment():
    """A one-row-per-item table of the machine and package versions."""
    import pandas as pd
    hw = hardware()
    rows: list[tuple[str, Any]] = [("device", hw["device"]), ("CPU cores", hw["cpu_count"]),
                                   ("RAM (GB)", hw["ram_gb"])]
    if hw["gpu"]:
        rows += [("GPU memory (GB)", hw["gpu"]["memory_gb"]),
                 ("GPU free at start (GB)", hw["gpu"]["free_gb_at_start"])]
    rows += [(k, v or "not installed") for k, v in package_versions().items()]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def settings_table(run) -> Any:
    """The resolved model and training settings of a run."""
    import pandas as pd
    rows = [("model asked for", run.choice.requested.name), ("model used", run.choice.describe()),
            ("smoke mode", run.choice.smoke), ("output folder", str(run.output_dir))]
    rows += [(k, v) for k, v in run.cfg.to_dict().items()]
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")


def run_summary(run) -> Any:
    """The run's headline numbers; a Tinker run adds the tokens it sent and their cost (run.json
    ``tinker``)."""
    import pandas as pd
    row = run.record.summary()
    tinker = run.record.data.get("tinker")
    if tinker:
        row.update({f"tinker_{k}_tokens": v for k, v in tinker["tokens"].items()})
        row["tinker_usd"] = (tinker["usd"] if tinker.get("usd") is not None
                             else "no price known (pass prices=)")
    return pd.DataFrame([row]).T.rename(columns={0: "value"})


def preview_data(dataset, n: int = 5):
    """The first ``n`` examples as a table: system prompt (if any), user text, assistant text
    (raw-text records: the prompt and the completion that is trained)."""
    import pandas as pd
    rows = []
    for rec, line in list(zip(dataset.raw, dataset.lines))[:n]:
        rows.append({"line": line, "raw_prompt": rec["raw_prompt"], "raw_completion (trained)": rec["raw_completion"]})
    for conv, line in list(zip(dataset.conversations, dataset.lines))[:n]:
        row = {"line": line}
        for m in conv:
            row[m["role"]] = m["content"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("line")


def files_table(folder: str | os.PathLike, skip: tuple[str, ...] = ("checkpoints",)):
    """Files under ``folder`` with their sizes (checkpoint folders summarised, not listed)."""
    import pandas as pd
    folder = Path(folder)
    rows = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not set(rel.parts) & set(skip):
            rows.append({"file": str(rel), "kB": round(p.stat().st_size / 1024, 1)})
    for name in skip:
        sub = folder / name
        if sub.is_dir():
            n = sum(1 for c in sub.iterdir() if c.is_dir())
            size = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
            rows.append({"file": f"{name}/ ({n} checkpoints)", "kB": round(size / 1024, 1)})
    return pd.DataFrame(rows).set_index("file")


def table(rows):
    """A list of dicts as a table."""
    import pandas as pd
    return pd.DataFrame(list(rows))
