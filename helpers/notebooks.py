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


def sources() -> list[Path]:
    """Every notebook source: a ``.py`` file under NoteBooks/ that starts with a jupytext header."""
    out = []
    for p in sorted(NOTEBOOKS_DIR.rglob("*.py")):
        head = p.read_text(encoding="utf-8")[:200]
        if "jupytext:" in head:
            out.append(p)
    return out


def render(source: Path) -> str:
    """The notebook JSON that ``source`` generates (no outputs, stable metadata)."""
    import jupytext
    nb = jupytext.read(source)
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
    for src in sources():
        target = src.with_suffix(".ipynb")
        text = render(src)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.write_text(text, encoding="utf-8")
                log.info("wrote %s", target.relative_to(ROOT))
    return stale


def execute(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any],
            *, timeout: int = 1800, progress: bool = True, log_output: bool = False) -> Path:
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
    print(f"{len(sources())} notebook(s) {'checked' if args.check else 'generated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
