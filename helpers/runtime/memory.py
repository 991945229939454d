"""GPU memory: how much is free, whether a model should fit, and out-of-memory errors.

- :func:`free_memory_gb` / :func:`memory_snapshot`: free VRAM as the *driver* reports it
  (``torch.cuda.mem_get_info``), so memory held by other processes (another notebook kernel,
  a stale run) counts; ``total - torch.cuda.memory_reserved()`` would not see it.
- :func:`preload_check`: the profile's VRAM estimate against the free VRAM, before a long load.
- :func:`is_oom` / :func:`free_memory`: recognise an out-of-memory error (torch, plain CUDA,
  cuBLAS, bitsandbytes/accelerate dispatch, Unsloth) and give the memory back;
  :func:`refuse_offload` turns a model spilled to the CPU into one (:class:`OffloadedError`);
  :func:`stage` labels where an error happened.

What to try when memory runs out (the fallback ladder, ``run_with_fallback``) is
:mod:`helpers.training.fallback`; :class:`FallbackError`, the base of its errors, is here because
:func:`is_oom` must not count an out-of-memory the ladder already handled.

Memory here is counted in GiB (2**30 bytes): the unit of a "24 GB" card, of ``nvidia-smi`` and
of torch's own messages ("Tried to allocate 2.00 GiB"). Nothing imports torch at module import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from helpers import models
from helpers.models import ModelChoice, ModelProfile, precision

log = logging.getLogger(__name__)

GIB = 1024 ** 3
#: the ladder never shortens sequences below this (GPT-OSS's system header alone needs ~256)
MIN_SEQ_LENGTH = 256
#: ... nor below this share of the length asked for
MIN_SEQ_SHARE = 0.5

#: lower-case fragments of out-of-memory messages
OOM_MARKERS = (
    "out of memory",                              # torch CUDA/HIP/XPU/MPS, "CUDA error: out of memory"
    "cublas_status_alloc_failed",                 # cuBLAS / bitsandbytes matmuls
    "cudnn_status_alloc_failed",                  # cuDNN workspace
    "defaultcpuallocator: can't allocate memory",  # host RAM (accelerate counts it as OOM)
    "enough gpu ram to fit",                      # transformers/bitsandbytes: layers spilled to CPU
    "no or negligible gpu memory available",      # unsloth_zoo fused cross entropy
)


# -- measuring ---------------------------------------------------------------------------------
def local_device() -> int:
    """This process's GPU: ``LOCAL_RANK`` (set by ``accelerate launch``/torchrun; 0 alone). Under
    DDP each process loads on its own GPU, so its memory is the one to measure."""
    try:
        return max(0, int(os.environ.get("LOCAL_RANK", "0") or 0))
    except ValueError:
        return 0


def _cuda_torch():
    """``torch`` when it imports and CUDA is available, else ``None``."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken driver reads as "no CUDA"
        return None


def free_memory_gb(device: int | None = None) -> float | None:
    """Free VRAM on ``device`` (default: this process's GPU, :func:`local_device`) in GiB as the
    driver reports it (other processes included); ``None`` without CUDA."""
    torch = _cuda_torch()
    if torch is None:
        return None
    device = local_device() if device is None else device
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except RuntimeError as e:
        log.warning("torch.cuda.mem_get_info(%s) failed (%s); free GPU memory unknown", device, e)
        return None
    return free / GIB


def _rss_gb() -> float | None:
    try:
        import psutil
        return psutil.Process().memory_info().rss / GIB
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB
    except (OSError, ValueError, IndexError):
        return None


def memory_snapshot(device: int | None = None) -> dict[str, Any]:
    """Memory now, in GiB: free/total VRAM (driver) on ``device`` (default: this process's GPU,
    :func:`local_device`), allocated/reserved by this process's torch, and this process's
    resident RAM. VRAM fields are ``None`` without CUDA."""
    snap: dict[str, Any] = {"device": "cpu", "vram_free_gb": None, "vram_total_gb": None,
                            "vram_used_gb": None, "torch_allocated_gb": None,
                            "torch_reserved_gb": None, "rss_gb": None}
    torch = _cuda_torch()
    if torch is not None:
        device = local_device() if device is None else device
        try:
            free, total = torch.cuda.mem_get_info(device)
            snap.update(device=f"cuda:{device} ({torch.cuda.get_device_name(device)})",
                        vram_free_gb=free / GIB, vram_total_gb=total / GIB,
                        vram_used_gb=(total - free) / GIB,
                        torch_allocated_gb=torch.cuda.memory_allocated(device) / GIB,
                        torch_reserved_gb=torch.cuda.memory_reserved(device) / GIB)
        except RuntimeError as e:
            log.warning("Could not read CUDA memory on device %s: %s", device, e)
    snap["rss_gb"] = _rss_gb()
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in snap.items()}


def format_snapshot(snap: dict[str, Any] | None = None, before: dict[str, Any] | None = None) -> str:
    """One line for a notebook; with ``before``, each number's change since then."""
    snap = memory_snapshot() if snap is None else snap

    def num(key: str) -> str:
        v = snap.get(key)
        if v is None:
            return "-"
        b = (before or {}).get(key)
        return f"{v:.2f}" + (f" ({v - b:+.2f})" if b is not None else "")

    parts = []
    if snap.get("vram_total_gb") is not None:
        parts.append(f"{snap['device']}: VRAM free {num('vram_free_gb')} of "
                     f"{snap['vram_total_gb']:.2f} GiB; torch allocated {num('torch_allocated_gb')}, "
                     f"reserved {num('torch_reserved_gb')} GiB")
    else:
        parts.append("no CUDA GPU")
    parts.append(f"process RAM {num('rss_gb')} GiB")
    return "; ".join(parts)


# -- before loading ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PreloadVerdict:
    """Whether a model should fit in the free GPU memory, and what to do when it does not."""

    fits: bool
    needed_gb: float
    free_gb: float | None
    message: str
    suggestions: tuple[str, ...] = ()
    #: the bits of the base weights the estimate is for (4, 8 or 16)
    bits: int = 16

    def __str__(self) -> str:
        return self.message


def _as_profile(model: ModelProfile | ModelChoice | str) -> ModelProfile:
    if isinstance(model, ModelChoice):
        return model.profile
    return models.get_profile(model)


def nice_lengths(below: int, lowest: int) -> list[int]:
    """Lengths of the form 2**k and 3 * 2**k strictly below ``below`` and at least ``lowest``,
    longest first (1024 -> 768, 512, 384, 256, ...)."""
    out, k = set(), 4
    while 2 ** k < below * 2:
        for v in (2 ** k, 3 * 2 ** (k - 1)):
            if lowest <= v < below:
                out.add(v)
        k += 1
    return sorted(out, reverse=True)


_nice_lengths = nice_lengths   # its name before the fallback ladder moved out


def preload_check(profile: ModelProfile | ModelChoice | str, load_in_4bit: bool | None = None,
                  free_gb: float | None = None, *, backend: str | None = None,
                  device: int | None = None, load_in_8bit: bool = False) -> PreloadVerdict:
    """Compare the profile's VRAM estimate on ``backend`` (peak LoRA training at its defaults;
    None: Unsloth's) at the bits asked (``load_in_8bit``, else ``load_in_4bit``; None: the
    profile's default) with the free VRAM on ``device`` (default: this process's GPU; measured
    unless ``free_gb`` is given). Without CUDA it passes with a note. The verdict's ``bits``
    and message say which precision was checked."""
    p = _as_profile(profile)
    eight = bool(load_in_8bit) and not load_in_4bit
    four = (p.load_in_4bit and not eight) if load_in_4bit is None else bool(load_in_4bit)
    bits = precision.bits(four, eight)
    needed = p.vram_gb(backend=backend, bits=bits)
    mode = precision.label(bits)
    if backend:
        mode += f" on {backend}"
    if free_gb is None:
        free_gb = free_memory_gb(device)
        if free_gb is None:
            note = (f"No CUDA GPU here, so GPU memory was not checked for {p.display_name}"
                    + (" (a stand-in runs on the CPU)." if p.is_standin else
                       f" (it needs about {needed:.1f} GiB; loading it stops at the no-GPU check "
                       "unless smoke mode is on)."))
            log.debug(note)  # callers show the verdict; loading checks again, so no log spam
            return PreloadVerdict(True, needed, None, note, bits=bits)
    at = (f"{mode}, at its defaults max_seq_length {p.max_seq_length}, batch_size "
          f"{p.train.batch_size} x grad_accum {p.train.grad_accum}")
    if needed <= free_gb:
        msg = (f"{p.display_name} needs about {needed:.1f} GiB of GPU memory ({at}); "
               f"{free_gb:.1f} GiB is free: it should fit ({free_gb - needed:.1f} GiB to spare).")
        log.debug(msg)
        return PreloadVerdict(True, needed, free_gb, msg, bits=bits)

    tips: list[str] = []
    shorter = nice_lengths(p.max_seq_length, max(MIN_SEQ_LENGTH, int(p.max_seq_length * MIN_SEQ_SHARE)))
    if shorter:
        tips.append(f"shorter sequences: max_seq_length={shorter[0]} (default {p.max_seq_length}; "
                    f"examples longer than that are truncated and counted)")
    if p.train.batch_size > 1:
        eff = p.train.batch_size * p.train.grad_accum
        tips.append(f"a smaller batch, same effective batch: batch_size=1, grad_accum={eff}")
    if bits == 16 and not p.no_8bit and p.vram_gb(backend=backend, bits=8) < needed:
        tips.append(f"8-bit loading: load_in_8bit=True (about "
                    f"{p.vram_gb(backend=backend, bits=8):.1f} GiB)")
    if not four and p.loads_4bit(backend) and p.vram_gb(True, backend) < needed:
        tips.append("4-bit loading (QLoRA): load_in_4bit=True"
                    + (", load_in_8bit=False" if eight else "")
                    + f" (about {p.vram_gb(True, backend):.1f} GiB)")
    fitting = None
    for name in p.fallbacks:
        fb = models.get_profile(name)
        fb_need = fb.vram_gb(None, backend)
        ok = fb_need <= free_gb
        fitting = fitting or (name if ok else None)
        tips.append(f"a lighter model: model='{name}' ({fb.display_name}, about {fb_need:.1f} GiB"
                    f"{', fits' if ok else ', does not fit either'})")
    tips.append("free memory held elsewhere: restart the kernel (models from earlier cells) or "
                "close other GPU processes (nvidia-smi lists them)")
    msg = (f"{p.display_name} needs about {needed:.1f} GiB of GPU memory ({at}) but only "
           f"{free_gb:.1f} GiB is free, so it will probably run out of memory. Try: "
           + "; ".join(f"({i}) {t}" for i, t in enumerate(tips, 1)) + "."
           + (f" Recommended: model='{fitting}'." if fitting else "")
           + " helpers.training.fallback.run_with_fallback tries these steps in order by itself.")
    log.warning(msg)
    return PreloadVerdict(False, needed, free_gb, msg, tuple(tips), bits=bits)


# -- out of memory -----------------------------------------------------------------------------
class FallbackError(RuntimeError):
    """Base of the errors :func:`helpers.training.fallback.run_with_fallback` raises after
    out-of-memory; ``events`` holds what happened. :func:`is_oom` is False for these (the OOM was
    already handled)."""

    def __init__(self, message: str, events: Sequence[dict] = ()):
        super().__init__(message)
        self.events = list(events)


class OffloadedError(RuntimeError):
    """The model did not fit on this process's GPU and was placed partly on the CPU or disk
    (``device_map="sequential"``/``"auto"`` spill instead of raising). Counts as out of memory
    (:func:`is_oom`), so the fallback ladder steps down."""


def refuse_offload(model, device: int | None = None) -> None:
    """Raise :class:`OffloadedError` when ``model.hf_device_map`` puts any module on the CPU or
    disk: training would crawl (or bitsandbytes would fail later) instead of the OOM the ladder
    handles."""
    device_map = getattr(model, "hf_device_map", None) or {}
    off = sorted(f"{name or '(whole model)'} -> {where}" for name, where in device_map.items()
                 if str(where).split(":")[0] in ("cpu", "disk", "meta"))
    if not off:
        return
    device = local_device() if device is None else device
    shown = ", ".join(off[:5]) + (f" and {len(off) - 5} more" if len(off) > 5 else "")
    raise OffloadedError(
        f"The model ran out of memory on cuda:{device}: it was loaded with {len(off)} of "
        f"{len(device_map)} device-map entries on the CPU or disk ({shown}) instead of the GPU. "
        "Use a lighter configuration (shorter max_seq_length, load_in_4bit=True, a smaller model; "
        "helpers.training.fallback.run_with_fallback steps down by itself) or free GPU memory held elsewhere.")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its explicit causes (``raise ... from``), not implicit contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 20:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__


def is_oom(exc: BaseException | None) -> bool:
    """True for an out-of-memory error: ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``),
    ``MemoryError``, or any error (or its ``raise ... from`` cause) whose message has one of
    :data:`OOM_MARKERS` (CUDA/cuBLAS/cuDNN allocation failures, bitsandbytes spilling layers to
    the CPU, Unsloth's "no GPU memory"). False for :class:`FallbackError` and anything else."""
    if exc is None or isinstance(exc, FallbackError) or not isinstance(exc, Exception):
        return False
    torch = sys.modules.get("torch")
    torch_oom = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                      if isinstance(t, type))
    for e in _chain(exc):
        if isinstance(e, FallbackError):
            return False
        if isinstance(e, (MemoryError, OffloadedError)) or (torch_oom and isinstance(e, torch_oom)):
            return True
        text = str(e).lower()
        if any(marker in text for marker in OOM_MARKERS):
            return True
    return False


def free_memory() -> float | None:
    """Collect garbage and return cached CUDA memory to the driver (``empty_cache`` +
    ``ipc_collect``). Safe on a CPU. Returns the free VRAM afterwards (GiB; ``None`` without CUDA)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None or _cuda_torch() is None:
        return None
    try:
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a failed kernel may leave an error to report once
        log.debug("cuda.synchronize after OOM: %s", e)
    try:
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    except Exception as e:  # noqa: BLE001
        log.warning("Could not empty the CUDA cache: %s", e)
    gc.collect()
    return free_memory_gb()


@contextlib.contextmanager
def stage(name: str):
    """Label errors raised inside with ``name`` ("load", "train", "evaluate"); the innermost label
    wins. :func:`helpers.training.fallback.run_with_fallback` reports it as where memory ran out."""
    try:
        yield
    except BaseException as e:
        if getattr(e, "_finetuning_stage", None) is None:
            with contextlib.suppress(Exception):
                e._finetuning_stage = name
        raise


def stage_of(exc: BaseException) -> str | None:
    return getattr(exc, "_finetuning_stage", None)
