"""A sweep's notebook and grid: the notebook's parameters, values in their own types, the grid's
axes and points, and each point's folder name (``point_id``)."""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from helpers.core.paths import ROOT
from helpers.core.paths import path as project_path

#: parameters the sweep sets itself
RESERVED = ("output_dir",)
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


class SweepError(ValueError):
    """A sweep that cannot start: unknown parameter, bad value, bad grid or name."""


# -- the notebook's parameters ----------------------------------------------------------------
def notebook_parameters(notebook: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The notebook's ``parameters`` cell as papermill reads it: name -> {inferred_type_name,
    default, help}."""
    import papermill
    return papermill.inspect_notebook(str(notebook))


def resolve_notebook(notebook: str | os.PathLike) -> Path:
    p = Path(notebook).expanduser()
    if not p.exists():
        p = project_path(notebook)
    if p.suffix == ".py":
        raise SweepError(f"{notebook} is a notebook source; pass the notebook made from it, "
                         f"{p.with_suffix('.ipynb').name} (`make notebooks` writes it).")
    if not p.is_file():
        raise SweepError(f"Notebook not found: {notebook} (paths are relative to the current "
                         f"folder or the project root {ROOT}).")
    return p


def _types(info: Mapping[str, Any]) -> list[str]:
    """The Python types a parameter takes, from its annotation, else from its default."""
    found = re.findall(r"\b(bool|int|float|str|list|dict|tuple)\b", str(info.get("inferred_type_name") or ""))
    if not found:
        try:
            default = ast.literal_eval(str(info.get("default")))
        except (ValueError, SyntaxError):
            default = None
        if default is not None:
            found = [type(default).__name__]
    return found


def coerce(name: str, value: Any, info: Mapping[str, Any]) -> Any:
    """``value`` (text from the command line, or a value from a grid file or a dict) as the
    parameter's own type; "None" is None. Raises :class:`SweepError` naming the parameter."""
    types = _types(info)
    if isinstance(value, str):
        text = value.strip()
        if text in ("None", "none", "null"):
            return None
        if "str" in types:
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                return text[1:-1]
            return value
        if not types:  # no annotation, default None: read it as a Python literal, else text
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return value
        for t in types:
            try:
                return _from_text(t, text)
            except ValueError:
                continue
        raise SweepError(f"{name}={value!r}: {name} is {' or '.join(types)} in the notebook "
                         f"(default {info.get('default')}); {_example(name, types)}.")
    if value is None or not types:
        return value
    for t in types:  # a typed value (grid file, dict): check it, widen int to float
        if t == "bool" and isinstance(value, bool):
            return value
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if t == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t == "str" and isinstance(value, str):
            return value
        if t in ("list", "tuple") and isinstance(value, (list, tuple)):
            return list(value)
        if t == "dict" and isinstance(value, dict):
            return value
    raise SweepError(f"{name}={value!r}: {name} is {' or '.join(types)} in the notebook "
                     f"(default {info.get('default')}); {_example(name, types)}.")


def _from_text(t: str, text: str) -> Any:
    if t == "bool":
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if t == "int":
        return int(text)
    if t == "float":
        return float(text)
    value = ast.literal_eval(text)  # list, dict, tuple
    if type(value).__name__ != t:
        raise ValueError(text)
    return value


def _example(name: str, types: Sequence[str]) -> str:
    examples = {"bool": "True or False", "int": "a whole number", "float": "a number (1e-3 works)",
                "list": "a Python list like [1, 2]", "dict": "a Python dict", "tuple": "a Python tuple"}
    return "give " + " or ".join(examples.get(t, t) for t in types) + " (or None for the default)"


def _check_names(names: Iterable[str], params: Mapping[str, Any], notebook: Path) -> None:
    names = list(names)
    reserved = [n for n in names if n in RESERVED]
    if reserved:
        raise SweepError(f"{', '.join(reserved)} cannot be set in a sweep: each point's folder is "
                         "its output_dir. Choose the sweep's folder with --name (and --root).")
    unknown = [n for n in names if n not in params]
    if unknown:
        raise SweepError(f"Unknown parameter(s) {', '.join(unknown)} for {notebook.name}. Its "
                         f"parameters: {', '.join(params)} (papermill --help-notebook {_relative(notebook)} "
                         "describes them).")


# -- grids ------------------------------------------------------------------------------------
def _split(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    return [s.strip() for item in items for s in str(item).split(";") if s.strip()]


def parse_assignment(text: str, *, what: str = "--grid") -> tuple[str, str]:
    """``NAME=VALUE``, or ``NAME: VALUE`` (a notebook's parameter line cannot hold a second ``=``:
    papermill skips it), split at the first of the two."""
    cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
    name, eq, value = (text[:cut], text[cut], text[cut + 1:]) if cut >= 0 else (text, "", "")
    if not eq or not name.strip():
        example = "lora_r=8,16" if what == "--grid" else "epochs=2"
        raise SweepError(f"{what} {text!r} needs the form NAME={'V1,V2' if what == '--grid' else 'VALUE'} "
                         f"(for example {what} {example}).")
    return name.strip(), value.strip()


def parse_grid(spec: str | Sequence[str] | Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """Axes from ``"lora_r=8,16;learning_rate=1e-3,5e-3"`` (or ``"lora_r: 8, 16; ..."``), a list
    of ``NAME=V1,V2`` strings, or a dict of name -> values (a scalar is one value). Values stay
    text until :func:`coerce`."""
    if isinstance(spec, Mapping):
        grid = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in spec.items()}
    else:
        grid = {}
        for item in _split(spec):
            name, values = parse_assignment(item, what="--grid")
            if name in grid:
                raise SweepError(f"--grid {name} is given twice; put all its values in one: "
                                 f"--grid {name}=V1,V2,...")
            grid[name] = [v.strip() for v in values.split(",") if v.strip()]
    for name, values in grid.items():
        if not values:
            raise SweepError(f"--grid {name} has no values; give them comma-separated, "
                             f"e.g. --grid {name}=V1,V2.")
    return grid


def parse_fixed(spec: str | Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Fixed parameters from ``"epochs=2;smoke=True"``, a list of ``NAME=VALUE``, or a dict."""
    if isinstance(spec, Mapping):
        return dict(spec)
    return dict(parse_assignment(item, what="--set") for item in _split(spec))


def read_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep described in a TOML (or JSON) file: optional ``notebook``, ``name``, ``metric``,
    a ``[grid]`` table of name -> list of values and a ``[fixed]`` table of name -> value."""
    p = Path(path).expanduser()
    if not p.exists():
        p = project_path(path)
    if not p.is_file():
        raise SweepError(f"Grid file not found: {path}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            spec = json.loads(text)
        else:
            import tomllib
            spec = tomllib.loads(text)
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise SweepError(f"{p}: {e}") from e
    known = ("notebook", "name", "metric", "grid", "fixed")
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise SweepError(f"{p}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}.")
    for table in ("grid", "fixed"):
        if table in spec and not isinstance(spec[table], dict):
            raise SweepError(f"{p}: [{table}] must be a table of parameter = value(s).")
    return spec


def point_id(values: Mapping[str, Any]) -> str:
    """A stable, filesystem-safe folder name from a point's values: ``lora_r=8__learning_rate=0.001``."""
    text = "__".join(f"{k}={_fmt(v)}" for k, v in values.items())
    safe = _SAFE.sub("_", text)
    if len(safe) > 120:
        safe = safe[:100] + "__" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return safe


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first axis varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def _relative(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p.resolve())
