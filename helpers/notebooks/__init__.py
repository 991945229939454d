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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.notebooks.setup import ROOT

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = ROOT / "NoteBooks"


TEMPLATES_DIR = NOTEBOOKS_DIR / "_templates"

MANIFEST = TEMPLATES_DIR / "notebooks.toml"
#: keys of a [notebooks."<path>"] table that are not template values
_META_KEYS = {"template", "persona", "needs", "run"}


@dataclass(frozen=True)
class Generated:
    """One notebook made from a template (a table of ``NoteBooks/_templates/notebooks.toml``)."""

    path: str                     # under NoteBooks/
    template: str
    values: dict[str, str]
    needs: str = ""
    run: str = ""


def generated(manifest: Path = MANIFEST) -> list[Generated]:
    """The generated notebooks listed in ``notebooks.toml``, with their template values."""
    import tomllib
    data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    personas = data.get("personas", {})
    out = []
    for rel, table in data.get("notebooks", {}).items():
        for key in ("template", "persona", "needs", "run"):
            if key not in table:
                raise ValueError(f"{manifest}: [notebooks.\"{rel}\"] has no `{key}`; every generated "
                                 f"notebook says {', '.join(sorted(_META_KEYS))}.")
        if table["persona"] not in personas:
            raise ValueError(f"{manifest}: [notebooks.\"{rel}\"] names persona {table['persona']!r}, "
                             f"which has no [personas.{table['persona']}] table "
                             f"(known: {', '.join(sorted(personas))}).")
        values = {**personas[table["persona"]],
                  **{k: str(v) for k, v in table.items() if k not in _META_KEYS}}
        out.append(Generated(path=rel, template=table["template"], values=values,
                             needs=table["needs"], run=table["run"]))
    return out


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
    for nb in generated():
        out[NOTEBOOKS_DIR / nb.path] = _fill(nb.template, nb.values)
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


def to_html(executed: str | os.PathLike) -> Path:
    """Save an executed notebook as a standalone HTML page beside it (``<name>.html``): the
    report, readable without Jupyter."""
    import nbformat
    from nbconvert import HTMLExporter
    executed = Path(executed)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    out = executed.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def execute(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any],
            *, timeout: int | None = 1800, progress: bool = True, log_output: bool = False,
            html: bool = True) -> Path:
    """Run a notebook headless with papermill; returns the executed notebook's path.
    ``log_output`` echoes the cells' output (progress lines) to this terminal as they run.
    With ``html`` the executed notebook is also saved as HTML beside it (:func:`to_html`), also
    when a cell fails (the page then shows where)."""
    import papermill as pm
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                            cwd=str(ROOT), progress_bar=progress and not log_output,
                            log_output=log_output, execution_timeout=timeout)
    finally:
        if html and output.is_file():
            try:
                to_html(output)
            except Exception as e:  # a report that cannot be rendered must not hide the run's result
                log.warning("Could not save %s as HTML: %s", output, e)
    return output


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that notebooks match their sources")
    p.add_argument("--list", action="store_true",
                   help="list the generated notebooks with what each needs and how to run it")
    args = p.parse_args(argv)
    if args.list:
        for nb in generated():
            print(f"NoteBooks/{nb.path}\n  needs: {nb.needs}\n  run:   {nb.run}")
        return 0
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
