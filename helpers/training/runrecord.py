"""The run record: ``outputs/<run>/run.json``.

Every run writes its parameters, package versions, hardware, wall time per phase, peak memory
(RSS; VRAM on a GPU), the loss history and its metrics. The file is rewritten atomically after
every phase, so a crash leaves the record of everything that finished (and the error).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from helpers import __version__, models
from helpers.core import clock
from helpers.core.files import write_json

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
            "unsloth", "unsloth_zoo", "bitsandbytes", "papermill")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["helpers"] = __version__
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or None
    try:
        info["ram_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        info["ram_gb"] = None
    info["gpu"] = None
    if "torch" in sys.modules or _has("torch"):
        import torch
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            free, total = torch.cuda.mem_get_info(0)
            info["gpu"] = {"name": props.name, "memory_gb": round(total / 1e9, 1),
                           "free_gb_at_start": round(free / 1e9, 1),
                           "count": torch.cuda.device_count()}
    mps = info["gpu"] is None and "torch" in sys.modules and models.mps_available()
    info["device"] = (info["gpu"]["name"] if info["gpu"] else "Apple GPU (mps)" if mps
                      else f"CPU ({info.get('cpu') or 'unknown'})")
    return info


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process (GB) and, on a GPU, peak VRAM allocated/reserved."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, float | None] = {"peak_rss_gb": round(rss_kb * 1024 / 1e9, 3),
                                    "peak_vram_gb": None, "peak_vram_reserved_gb": None}
    if "torch" in sys.modules:
        import torch
        if torch.cuda.is_available():
            out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
            out["peak_vram_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 3)
    return out


class RunRecord:
    """Collects a run's facts and keeps ``run.json`` up to date."""

    def __init__(self, output_dir: str | os.PathLike, *, name: str | None = None,
                 parameters: dict[str, Any] | None = None):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.output_dir / "run.json"
        self.data: dict[str, Any] = {
            "name": name or self.output_dir.name,
            "started": clock.now(),
            "finished": None,
            "status": "running",
            "parameters": dict(parameters or {}),
            "model": {},
            "versions": package_versions(),
            "hardware": hardware(),
            "phases": {},
            "memory": peak_memory(),
            "data": {},
            "train": {},
            "loss_history": [],
            "metrics": {},
            "errors": [],
        }
        self._t0 = time.time()
        self.save()

    # -- updating -------------------------------------------------------------------------
    def update(self, section: str, values: dict[str, Any]) -> None:
        self.data.setdefault(section, {}).update(values)
        self.save()

    def set_metric(self, name: str, value: Any) -> None:
        self.update("metrics", {name: value})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.data["metrics"]

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a phase; its wall time and the peak memory so far land in run.json even if it fails."""
        t0 = time.time()
        try:
            yield
        except BaseException as e:
            self.data["errors"].append({"phase": name, "error": f"{type(e).__name__}: {e}"})
            self.data["status"] = "failed"
            raise
        finally:
            self.data["phases"][name] = round(time.time() - t0, 2)
            self.data["memory"] = peak_memory()
            self.save()

    def finish(self) -> dict[str, Any]:
        self.data["finished"] = clock.now()
        self.data["wall_seconds"] = round(time.time() - self._t0, 1)
        if self.data["status"] == "running":
            # a run stopped as diverged is not a success (helpers.training.divergence)
            self.data["status"] = "diverged" if self.data["train"].get("diverged") else "finished"
        self.data["memory"] = peak_memory()
        self.save()
        return self.data

    def save(self) -> None:
        write_json(self.path, self.data)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, flat, for a table in a notebook."""
        d = self.data
        row = {"run": d["name"], "model": d["model"].get("profile"), "device": d["hardware"]["device"],
               "backend": d["train"].get("backend"), "steps": d["train"].get("steps"),
               "final_loss": d["train"].get("final_loss"), "status": d["status"],
               "train_seconds": d["train"].get("train_seconds"),
               "peak_rss_gb": d["memory"].get("peak_rss_gb"),
               "peak_vram_gb": d["memory"].get("peak_vram_gb")}
        row.update(d["metrics"])
        return row


def load(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    return json.loads(path.read_text())


class ReplicaRecord(RunRecord):
    """The run record of a process other than the main one in a multi-process run: kept in
    memory, never written (the main process alone writes run.json)."""

    def save(self) -> None:
        pass
