"""A run's per-epoch checkpoints and the best one: listing them, the rule that picks the best, the
``best`` pointer in the run folder, and the variant spec that names a checkpoint.

The trainer saves ``<run>/checkpoints/checkpoint-<step>`` at the end of every epoch (every
``eval_steps`` steps when that is set), each holding the LoRA adapter as it was then; keep them
all with ``keep_checkpoints=0`` (the persona fine-tuning notebooks do). Each checkpoint is scored on
the held-out chapters by :mod:`helpers.evaluation.checkpoint_eval`; :func:`choose_best` then picks
the checkpoint with the best style (lowest Burrows' Delta to the author) among those that copy
at most ``copying_ceiling`` of their answers from the training text, ties going to the lower
held-out bits per byte. :func:`write_best` records the choice in run.json (``best_checkpoint``)
and in ``<run>/best_checkpoint.json``, which :func:`adapter_for` reads back for a comparison
variant such as ``"qwen3-14b:v2@best"`` (:func:`split_spec`).

Nothing here loads a model.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers.core.files import write_json

log = logging.getLogger(__name__)

#: the most copying a checkpoint may show and still be chosen: the mean share of its answers'
#: 8-word runs found verbatim in the training passages (``ngram_overlap``). A fifth keeps the
#: author's turns of phrase and rules out answers that are mostly pasted passages.
DEFAULT_COPYING_CEILING = 0.2

#: the file in the run folder that says which checkpoint is best (a copy of run.json's entry)
BEST_FILE = "best_checkpoint.json"

#: ``<spec>@best``, ``<spec>@checkpoint-<step>`` (``:`` instead of ``@`` also works)
_SELECTOR = re.compile(r"^(?P<spec>.+?)[@:](?P<selector>best|checkpoint-\d+)$")


class CheckpointError(ValueError):
    """A run has no checkpoints, no best one yet, or not the one named; the message says the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint of a run: its folder, optimizer step and epoch (from its
    ``trainer_state.json``; None when the file is missing)."""

    path: Path
    step: int
    epoch: float | None

    @property
    def name(self) -> str:
        return self.path.name


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's ``checkpoints/checkpoint-<step>`` folders that hold an adapter, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    out = []
    for p in folder.glob("checkpoint-*"):
        step = p.name.split("-")[-1]
        if not (p.is_dir() and step.isdigit() and (p / "adapter_model.safetensors").is_file()):
            continue
        epoch = None
        state = p / "trainer_state.json"
        if state.is_file():
            try:
                epoch = json.loads(state.read_text()).get("epoch")
            except ValueError:
                log.warning("%s is not valid JSON; the checkpoint's epoch is unknown", state)
        out.append(Checkpoint(p, int(step), None if epoch is None else float(epoch)))
    return sorted(out, key=lambda c: c.step)


# -- the rule ----------------------------------------------------------------------------------
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def choose_best(rows: Sequence[Mapping[str, Any]], copying_ceiling: float = DEFAULT_COPYING_CEILING
                ) -> tuple[Mapping[str, Any] | None, str]:
    """The best checkpoint of ``rows`` (one per checkpoint: ``checkpoint``, ``delta``,
    ``copying``, ``bits_per_byte``, and ``step`` for the last tie-break) and why.

    Rule: among rows whose ``copying`` is at most ``copying_ceiling`` and whose ``delta`` is a
    number, the lowest ``delta`` (style closest to the author); equal deltas go to the lower
    ``bits_per_byte`` (a missing one counts as worst), then to the earlier checkpoint. Returns
    ``(None, reason)`` when no row qualifies."""
    if not 0 <= copying_ceiling <= 1:
        raise CheckpointError(f"copying_ceiling={copying_ceiling}: it is a share of copied 8-word "
                              "runs, so set it between 0 and 1 (default "
                              f"{DEFAULT_COPYING_CEILING}).")
    if not rows:
        return None, "no checkpoint was evaluated"
    over = [r for r in rows if not (_finite(r.get("copying")) and r["copying"] <= copying_ceiling)]
    no_delta = [r for r in rows if r not in over and not _finite(r.get("delta"))]
    ok = [r for r in rows if r not in over and r not in no_delta]
    if not ok:
        parts = []
        if over:
            parts.append(f"{len(over)} copy more than the ceiling {copying_ceiling:g} (or have no "
                         "copying score)")
        if no_delta:
            parts.append(f"{len(no_delta)} gave no words to measure style on")
        return None, (f"none of the {len(rows)} checkpoints qualifies: " + "; ".join(parts)
                      + ". Raise copying_ceiling to accept more copying.")

    def key(r):
        bpb = r.get("bits_per_byte")
        return (r["delta"], bpb if _finite(bpb) else math.inf, r.get("step", 0))
    best = min(ok, key=key)
    ties = [r for r in ok if r["delta"] == best["delta"]]
    why = (f"lowest Burrows' Delta ({best['delta']:.3f}) of the {len(ok)} checkpoints copying at "
           f"most {copying_ceiling:g}")
    if len(ties) > 1:
        why += f"; {len(ties)} tied on Delta, the lowest bits per byte won"
    if over:
        why += f"; {len(over)} over the copying ceiling left out"
    return best, why


# -- the pointer -------------------------------------------------------------------------------
def write_best(run_dir: str | Path, best: Mapping[str, Any] | None, why: str, *,
               copying_ceiling: float, record=None) -> dict[str, Any]:
    """Record the choice as run.json ``best_checkpoint`` and ``<run>/best_checkpoint.json``
    (``checkpoint``: the folder relative to the run folder; ``epoch``, ``step``, its metrics, the
    ceiling and the reason), and the headline numbers as run.json metrics
    ``best_checkpoint_<epoch|delta|bits_per_byte|copying>``. ``record``: the run's open
    :class:`helpers.training.runrecord.RunRecord` (a notebook's ``run.record``), updated in place
    so that its next save keeps the entry; without it run.json is rewritten here. ``best`` None:
    the entry says why nothing was chosen and the pointer file is removed."""
    run_dir = Path(run_dir)
    entry: dict[str, Any] = {"copying_ceiling": copying_ceiling, "reason": why}
    metrics: dict[str, Any] = {}
    if best is not None:
        entry.update(checkpoint=f"checkpoints/{best['checkpoint']}", step=best.get("step"),
                     epoch=best.get("epoch"), adapter_sha256=best.get("adapter_sha256"),
                     metrics={k: best.get(k) for k in ("delta", "bits_per_byte", "copying",
                                                       "longest_copy_share", "recitation_share")
                              if k in best})
        metrics = {f"best_checkpoint_{k}": best.get(k) for k in ("epoch", "delta", "bits_per_byte",
                                                                  "copying")}
        write_json(run_dir / BEST_FILE, entry)
    else:
        (run_dir / BEST_FILE).unlink(missing_ok=True)
    if record is not None:
        record.data["best_checkpoint"] = entry
        record.update("metrics", metrics)
    else:
        path = run_dir / "run.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data["best_checkpoint"] = entry
        data.setdefault("metrics", {}).update(metrics)
        write_json(path, data)
    return entry


def read_best(run_dir: str | Path) -> dict[str, Any]:
    """``<run>/best_checkpoint.json``; :class:`CheckpointError` saying how to make it when absent."""
    path = Path(run_dir) / BEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{Path(run_dir)} has no {BEST_FILE}: its checkpoints have not been evaluated, or none "
            "stayed under the copying ceiling. Run the 'best checkpoint' section of its fine-tuning "
            "notebook (or helpers.evaluation.checkpoint_eval.evaluate_run(run_folder, sets_folder)); "
            "see best_checkpoint.reason in its run.json.")
    return json.loads(path.read_text())


# -- variant specs -----------------------------------------------------------------------------
def split_spec(spec: str) -> tuple[str, str | None]:
    """``("qwen3-14b:v2", "best")`` from ``"qwen3-14b:v2@best"``; ``(spec, None)`` when the spec
    names no checkpoint. Selectors: ``best`` and ``checkpoint-<step>``, after ``@`` or ``:``."""
    m = _SELECTOR.match(spec.strip())
    return (m["spec"], m["selector"]) if m else (spec.strip(), None)


def adapter_for(run_dir: str | Path, selector: str) -> tuple[Path, str]:
    """The adapter folder ``selector`` names in a run (``best`` or ``checkpoint-<step>``) and a
    label for it (``"epoch 2"``, else the checkpoint's name)."""
    run_dir = Path(run_dir)
    found = {c.name: c for c in list_checkpoints(run_dir)}
    if selector == "best":
        name = Path(read_best(run_dir)["checkpoint"]).name
        if name not in found:
            raise CheckpointError(
                f"{run_dir}/{BEST_FILE} names {name}, which is no longer in {run_dir}/checkpoints "
                f"(it holds {', '.join(found) or 'none'}): evaluate the checkpoints again, or name "
                "one of them (<spec>@checkpoint-<step>).")
    else:
        name = selector
        if name not in found:
            raise CheckpointError(
                f"{run_dir} has no {name} with an adapter; its checkpoints: "
                f"{', '.join(found) or 'none (train with keep_checkpoints=0 to keep every epoch)'}.")
    c = found[name]
    label = f"epoch {c.epoch:g}" if c.epoch is not None else c.name
    return c.path, label


def at_checkpoint(variant, selector: str):
    """A comparison variant (:class:`helpers.evaluation.compare.Variant`) moved to one of its
    run's checkpoints: ``adapter_dir`` set to it, ``"best"`` or the checkpoint's name added to
    its name and version (``"Qwen3-14B V2 best (epoch 2)"``, version ``"V2 best"``). A run not
    trained yet stays a missing variant (not ``ready``), which the comparison lists and skips."""
    import dataclasses
    if variant.run_dir is None:
        raise CheckpointError(
            f"{variant.name!r} is a base model, which has no checkpoints: name a run, e.g. "
            f"'{variant.model}:v2@{selector}' or '<run folder>@{selector}'.")
    version = f"{variant.version} {selector}"
    if not (variant.run_dir / "run.json").is_file():
        return dataclasses.replace(variant, name=f"{variant.name} {selector}", version=version,
                                   adapter_dir=variant.run_dir / "checkpoints" / selector)
    if selector == "best" and not (variant.run_dir / BEST_FILE).is_file():
        # trained, but no best chosen (checkpoints not evaluated, or all over the ceiling):
        # listed as missing with the reason, so a comparison with "@best" among its defaults
        # still runs after a command-line training
        log.warning("%s: %s", variant.name, _no_best_reason(variant.run_dir))
        return dataclasses.replace(variant, name=f"{variant.name} {selector}", version=version,
                                   adapter_dir=variant.run_dir / "checkpoints" / selector)
    adapter, label = adapter_for(variant.run_dir, selector)
    return dataclasses.replace(variant, name=f"{variant.name} {selector} ({label})",
                               version=version, adapter_dir=adapter)


def _no_best_reason(run_dir: Path) -> str:
    try:
        read_best(run_dir)
    except CheckpointError as e:
        return str(e)
    return ""
