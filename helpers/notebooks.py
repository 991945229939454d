"""The notebooks are generated from ``py:percent`` sources beside them (jupytext), and
executed headless with papermill.

    python -m helpers.notebooks            # regenerate every .ipynb from its .py source
    python -m helpers.notebooks --check    # fail if a committed notebook differs from its source
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from helpers.notebook import ROOT

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = ROOT / "NoteBooks"


TEMPLATES_DIR = NOTEBOOKS_DIR / "_templates"

_JP = {"persona_dir": "NoteBooks/JordanPeterson", "persona_name": "Jordan Peterson"}
_MH = {"persona_dir": "NoteBooks/MarenHolloway", "persona_name": "Maren Holloway"}
#: notebooks made from a template: output path (under NoteBooks/), template, values
GENERATED: dict[str, tuple[str, dict[str, str]]] = {
    "JordanPeterson/JordanPeterson_DataPrep.ipynb": ("persona_dataprep.py", _JP),
    "JordanPeterson/GPT_OSS_20B_JordanPeterson_FineTuning.ipynb": ("persona_finetune.py", {
        **_JP, "title": "GPT-OSS 20B", "model": "gpt-oss-20b", "recipe": "v1",
        "recipe_label": "V1 passage completion", "epochs": "1", "lora_r": "16", "lora_alpha": "16",
        "notes": "Harmony chat format: answers on the final channel, reasoning effort low; the "
                 "mask check below shows what is trained."}),
    "JordanPeterson/Qwen3_14B_JordanPeterson_FineTuning.ipynb": ("persona_finetune.py", {
        **_JP, "title": "Qwen3-14B", "model": "qwen3-14b", "recipe": "v1",
        "recipe_label": "V1 passage completion", "epochs": "1", "lora_r": "16", "lora_alpha": "16",
        "notes": "Thinking off: the template's empty think block is rendered but never trained."}),
    "JordanPeterson/Qwen3_14B_JordanPeterson_V2_FineTuning.ipynb": ("persona_finetune.py", {
        **_JP, "title": "Qwen3-14B", "model": "qwen3-14b", "recipe": "v2",
        "recipe_label": "V2 synthetic Q&A", "epochs": "3", "lora_r": "32", "lora_alpha": "32",
        "notes": "V2: the user turn is a generated question, the answer the book's own passage, "
                 "so training matches how the model is asked."}),
    "JordanPeterson/Qwen3_32B_JordanPeterson_FineTuning.ipynb": ("persona_finetune.py", {
        **_JP, "title": "Qwen3-32B", "model": "qwen3-32b", "recipe": "v2",
        "recipe_label": "V2 synthetic Q&A", "epochs": "3", "lora_r": "32", "lora_alpha": "32",
        "notes": "About 17.6 GB of 4-bit weights on a 24 GB card: if memory runs out the run "
                 "steps down (max_seq_length 1024 -> 768 -> 512, batch 1, then Qwen3-30B-A3B, "
                 "then Qwen3-14B) and records each step in run.json."}),
    "JordanPeterson/AllModels_JordanPeterson_Comparison.ipynb": ("persona_comparison.py", {
        **_JP, "variants": '["gpt-oss-20b", "gpt-oss-20b:v1", "qwen3-14b", "qwen3-14b:v1", '
                           '"qwen3-14b:v2", "qwen3-32b", "qwen3-32b:v2"]'}),
    # the second persona: the sample book's invented author (what `make demo` runs)
    "MarenHolloway/MarenHolloway_DataPrep.ipynb": ("persona_dataprep.py", _MH),
    "MarenHolloway/Qwen3_14B_MarenHolloway_V2_FineTuning.ipynb": ("persona_finetune.py", {
        **_MH, "title": "Qwen3-14B", "model": "qwen3-14b", "recipe": "v2",
        "recipe_label": "V2 synthetic Q&A", "epochs": "3", "lora_r": "32", "lora_alpha": "32",
        "notes": "Questions from the rule-based source (no API key needed), answers the book's "
                 "own passages."}),
    "MarenHolloway/AllModels_MarenHolloway_Comparison.ipynb": ("persona_comparison.py", {
        **_MH, "variants": '["qwen3-14b", "qwen3-14b:v2"]'}),
}


def sources() -> list[Path]:
    """Every hand-written notebook source: a ``.py`` file under NoteBooks/ (templates aside)
    that starts with a jupytext header."""
    out = []
    for p in sorted(NOTEBOOKS_DIR.rglob("*.py")):
        if TEMPLATES_DIR in p.parents:
            continue
        head = p.read_text(encoding="utf-8")[:200]
        if "jupytext:" in head:
            out.append(p)
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    import re
    text = (TEMPLATES_DIR / template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{(\w+)\}\}", text)
    if left:
        raise KeyError(f"template {template} has no value for {', '.join(sorted(set(left)))}")
    return text


def targets() -> dict[Path, str]:
    """Every notebook and the py:percent text it is made from."""
    out = {src.with_suffix(".ipynb"): src.read_text(encoding="utf-8") for src in sources()}
    for rel, (template, values) in GENERATED.items():
        out[NOTEBOOKS_DIR / rel] = _fill(template, values)
    return out


def render(source: Path | str) -> str:
    """The notebook JSON made from a py:percent source file or text (no outputs, stable metadata)."""
    import jupytext
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def generate(check: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) each notebook; returns those that differed."""
    stale = []
    for target, source_text in targets().items():
        text = render(source_text)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.write_text(text, encoding="utf-8")
                log.info("wrote %s", target.relative_to(ROOT))
    return stale


def execute(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any],
            *, timeout: int | None = 1800, progress: bool = True, log_output: bool = False) -> Path:
    """Run a notebook headless with papermill; returns the executed notebook's path.
    ``log_output`` echoes the cells' output (progress lines) to this terminal as they run."""
    import papermill as pm
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                        cwd=str(ROOT), progress_bar=progress and not log_output,
                        log_output=log_output, execution_timeout=timeout)
    return output


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that notebooks match their sources")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale = generate(check=args.check)
    if args.check and stale:
        print("Notebooks out of date with their .py sources (run `make notebooks`):\n  "
              + "\n  ".join(str(s.relative_to(ROOT)) for s in stale), file=sys.stderr)
        return 1
    print(f"{len(targets())} notebook(s) {'checked' if args.check else 'generated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
