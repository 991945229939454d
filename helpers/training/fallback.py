"""The out-of-memory fallback ladder: what to try, lightest last, when a configuration runs out
of GPU memory, and running down it.

- :func:`ladder`: first the configuration asked for; then shorter ``max_seq_length`` (down to
  half, never below 256 nor below what the data needs); then ``batch_size`` 1 with more
  ``grad_accum`` (same effective batch); then 4-bit loading if the model was asked in 16 or 8
  bits (straight from 16 to 4: seq and batch already failed, each rung is a new load, and 4 bits
  saves the most); then each lighter model of ``profile.fallbacks`` with its own defaults.
- :func:`run_with_fallback`: calls an attempt per rung until one does not run out of memory,
  logging each step (and in run.json ``fallbacks``).

**The contract of** :func:`run_with_fallback`: the ``attempt`` callable does *everything* that
can run out of memory for one configuration (load the model, add LoRA, train, evaluate) and
leaves no reference to the model outside itself (or a ``cleanup`` callable drops it).
Out-of-memory while *loading* is the common case for the big models (Qwen3-32B ran out of
memory inside ``from_pretrained``), so loading must happen inside ``attempt``, never before it.

Measuring memory and recognising out-of-memory errors is :mod:`helpers.runtime.memory`. Nothing
imports torch at module import.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from helpers import models
from helpers.core import clock
from helpers.models import ModelChoice, ModelProfile, precision
from helpers.runtime.loading import select_backend
from helpers.runtime.memory import (
    MIN_SEQ_LENGTH,
    MIN_SEQ_SHARE,
    FallbackError,
    free_memory,
    is_oom,
    nice_lengths,
    stage_of,
)
from helpers.training.config import TrainConfig, resolve_config

log = logging.getLogger(__name__)

#: smoke mode: stand-in floors (the tiny stand-ins run at up to 1024 tokens)
_STANDIN_MIN_SEQ = {"gpt-oss": 256}
_STANDIN_MIN_SEQ_DEFAULT = 64
#: the settings the ladder changes; a lighter model takes its own profile's values for these
MEMORY_SETTINGS = ("max_seq_length", "batch_size", "grad_accum", "load_in_4bit", "load_in_8bit")


class FallbackStoppedError(FallbackError):
    """Out of memory with ``automatic=False``: the message lists the next rungs and how to set each."""

    def __init__(self, message: str, events: Sequence[dict] = (), next_rungs: Sequence["Rung"] = ()):
        super().__init__(message, events)
        self.next_rungs = list(next_rungs)


class FallbackExhaustedError(FallbackError):
    """Every rung of the ladder ran out of memory; the message lists each attempt and its error."""


def _short_error(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the ladder --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rung:
    """One configuration to try: what runs (``choice``), how (``cfg``) and why (``reason``)."""

    choice: ModelChoice
    cfg: TrainConfig
    reason: str
    kind: str = "asked"   # asked | max_seq_length | batch_size | load_in_4bit | model
    index: int = 0
    #: what to set by hand (notebook / CLI parameters) to run this rung instead of the one asked
    parameters: dict = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        return {"model": self.choice.requested.name, "profile": self.choice.profile.name,
                **{k: getattr(self.cfg, k) for k in MEMORY_SETTINGS}}

    def describe(self) -> str:
        c = self.cfg
        return (f"{self.choice.describe()}: max_seq_length {c.max_seq_length}, batch_size "
                f"{c.batch_size} x grad_accum {c.grad_accum}, {precision.label(c.bits)}")

    def how_to(self) -> str:
        """The parameters that run this rung by hand, as a call and as papermill options."""
        if not self.parameters:
            return "the settings asked for"
        call = ", ".join(f"{k}={v!r}" for k, v in self.parameters.items())
        pm = " ".join(f"-p {k} {v}" for k, v in self.parameters.items())
        return f"set {call} (papermill: {pm})"


def _defaults(profile: ModelProfile) -> TrainConfig:
    return resolve_config(profile)


def _explicit(choice: ModelChoice, cfg: TrainConfig) -> dict[str, Any]:
    """Settings in ``cfg`` that differ from the running profile's defaults (explicit parameters)."""
    base = _defaults(choice.profile)
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(cfg, f.name) != getattr(base, f.name)}


def _changed(before: TrainConfig, after: TrainConfig) -> dict[str, Any]:
    return {k: getattr(after, k) for k in MEMORY_SETTINGS if getattr(after, k) != getattr(before, k)}


def _plan(profile: ModelProfile, cfg: TrainConfig, min_seq_length: int | None,
          backend: str | None = None) -> list[tuple]:
    """The ladder's steps for ``profile`` asked with ``cfg`` on ``backend``: ("seq", length),
    ("batch",), ("4bit",) and ("model", name). 4 bits only where ``backend`` loads them and they
    are lighter; a lighter model only when its estimate on ``backend`` is below the lightest
    configuration of ``profile`` planned so far (a heavier one would run out of memory too)."""
    steps: list[tuple] = []
    asked = cfg.max_seq_length
    lowest = max(MIN_SEQ_LENGTH, int(asked * MIN_SEQ_SHARE), min_seq_length or 0)
    lengths = nice_lengths(asked, lowest)
    need = -(-(min_seq_length or 0) // 8) * 8  # the data's need, rounded up to a multiple of 8
    if min_seq_length and lowest == min_seq_length and need < asked and need not in lengths \
            and (not lengths or need < lengths[-1]):
        lengths.append(need)  # go down to what the data needs when it lies between nice lengths
    steps += [("seq", n) for n in lengths]
    if cfg.batch_size > 1:
        steps.append(("batch",))
    bits = cfg.bits
    if bits != 4 and profile.loads_4bit(backend) \
            and profile.vram_gb(True, backend) < profile.vram_gb(backend=backend, bits=bits):
        steps.append(("4bit",))
        bits = 4
    lightest = profile.vram_gb(backend=backend, bits=bits)
    seen = {profile.name}
    for name in profile.fallbacks:
        if name in seen:
            continue
        seen.add(name)
        fb = models.get_profile(name)
        need = fb.vram_gb(None, backend)
        if need >= lightest:
            log.info("Fallback ladder of %s: skipping %s (about %.1f GiB on %s, not lighter than "
                     "%.1f GiB)", profile.name, name, need, backend or "unsloth", lightest)
            continue
        steps.append(("model", name))
    return steps


def ladder(choice: ModelChoice, cfg: TrainConfig, *, min_seq_length: int | None = None,
           backend: str | None = None) -> list[Rung]:
    """The configurations to try, lightest last, each a :class:`Rung`:

    1. ``cfg`` as asked;
    2. shorter ``max_seq_length`` (1024 -> 768 -> 512: nice lengths down to half of the asked
       one, never below 256 nor below ``min_seq_length``, the longest example the data needs);
    3. ``batch_size`` 1 with ``grad_accum`` raised to keep the effective batch (2 x 4 -> 1 x 8);
    4. ``load_in_4bit=True`` when asked in 16 or 8 bits (``load_in_8bit`` off) and the profile
       has a 4-bit checkpoint that ``backend`` loads and that is lighter there;
    5. each model in ``profile.fallbacks`` in order, with its own profile's defaults (settings
       you set explicitly that are not memory settings, such as ``epochs`` or ``seed``, carry
       over; ``max_seq_length`` never grows beyond the one asked), when its VRAM estimate on
       ``backend`` is below the asked model's lightest (Qwen3-30B-A3B in 4 bits is 19 GiB on
       Unsloth but ~65 GiB on transformers, whose bitsandbytes leaves its experts in 16 bits).

    ``backend``: None resolves ``cfg.backend`` (``auto``: what :func:`helpers.train.select_backend`
    picks here).
    Steps 2-4 are cumulative (each rung is lighter than the one before). In smoke mode the
    steps are planned on the model asked for and applied to its stand-in (lengths scaled by the
    same ratios; the lighter models map to their stand-ins), so the ladder runs on a CPU.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a helpers.train.TrainConfig (from resolve_config), not "
                        f"{type(cfg).__name__}.")
    if backend is None:
        backend = cfg.backend if cfg.backend != "auto" else select_backend("auto")
    explicit = _explicit(choice, cfg)
    carried = {k: v for k, v in explicit.items() if k not in MEMORY_SETTINGS}
    smoke = choice.smoke and choice.requested is not choice.profile
    if smoke:
        # plan on the real model with the same explicit settings, apply to the stand-in
        real_cfg = resolve_config(choice.requested, **explicit)
        steps = _plan(choice.requested, real_cfg, None, backend)
        floor = max(_STANDIN_MIN_SEQ.get(choice.family, _STANDIN_MIN_SEQ_DEFAULT), min_seq_length or 0)

        def length(n: int) -> int:
            scaled = int(round(cfg.max_seq_length * n / real_cfg.max_seq_length / 8)) * 8
            return max(scaled, floor)
    else:
        steps = _plan(choice.profile, cfg, min_seq_length, backend)

        def length(n: int) -> int:
            return n

    rungs = [Rung(choice, cfg, f"as asked: {choice.describe()}", "asked", 0, {})]
    current = cfg
    for step in steps:
        if step[0] == "seq":
            n = length(step[1])
            if n >= current.max_seq_length:
                continue
            new = dataclasses.replace(current, max_seq_length=n)
            reason = f"max_seq_length {current.max_seq_length} -> {n}"
            rungs.append(Rung(choice, new, reason, "max_seq_length", len(rungs), _changed(cfg, new)))
            current = new
        elif step[0] == "batch":
            if current.batch_size <= 1:
                continue
            eff = current.batch_size * current.grad_accum
            new = dataclasses.replace(current, batch_size=1, grad_accum=eff)
            reason = (f"batch_size {current.batch_size} -> 1, grad_accum {current.grad_accum} -> "
                      f"{eff} (effective batch {eff} kept)")
            rungs.append(Rung(choice, new, reason, "batch_size", len(rungs), _changed(cfg, new)))
            current = new
        elif step[0] == "4bit":
            if current.load_in_4bit:
                continue
            new = dataclasses.replace(current, load_in_4bit=True, load_in_8bit=False)
            reason = "load_in_4bit False -> True (QLoRA: base weights in 4 bits)" + (
                ", load_in_8bit True -> False" if current.load_in_8bit else "")
            if choice.profile.is_standin:
                reason += "; a stand-in on a CPU loads in full precision anyway"
            rungs.append(Rung(choice, new, reason, "load_in_4bit", len(rungs), _changed(cfg, new)))
            current = new
        else:
            name = step[1]
            fb_choice = models.choose(name, smoke=choice.smoke)
            fb_default = resolve_config(fb_choice.profile, **carried)
            seq = min(fb_default.max_seq_length, cfg.max_seq_length)
            if min_seq_length:
                seq = max(seq, min_seq_length)
            new = dataclasses.replace(fb_default, max_seq_length=seq)
            params = {"model": fb_choice.requested.name, **_changed(fb_default, new)}
            reason = (f"lighter model: {choice.requested.name} -> {fb_choice.requested.name}"
                      + (f" (smoke mode: {fb_choice.profile.name})" if fb_choice.smoke else
                         f" ({fb_choice.profile.display_name}, about "
                         f"{fb_choice.profile.vram_gb(backend=backend, bits=new.bits):.1f} GiB on "
                         f"{backend})")
                      + f" with its own defaults: max_seq_length {new.max_seq_length}, batch_size "
                        f"{new.batch_size} x grad_accum {new.grad_accum}")
            rungs.append(Rung(fb_choice, new, reason, "model", len(rungs), params))
    return rungs


# -- running down the ladder -------------------------------------------------------------------
@dataclass
class FallbackResult:
    """What :func:`run_with_fallback` returns: the attempt's own result, the rung that worked,
    and the events (one per out-of-memory, then one "succeeded" when a fallback was needed)."""

    result: Any
    rung: Rung
    events: list[dict]

    @property
    def fell_back(self) -> bool:
        return self.rung.index > 0

    @property
    def attempts(self) -> int:
        return sum(1 for e in self.events if e["event"] == "out_of_memory") + 1


def format_event(event: dict) -> str:
    """One line per event, for ``on_step`` in a notebook: ``on_step=lambda e: print(format_event(e))``."""
    n = f"attempt {event['attempt']}/{event['of']}"
    if event["event"] == "succeeded":
        return f"{n} succeeded: {event['rung']}" + (
            f" (to use it directly: {event['how_to']})" if event.get("how_to") else "")
    where = f" during {event['stage']}" if event.get("stage") else ""
    line = f"{n} ran out of memory{where}: {event['rung']} -- {event['error']}"
    if event.get("next"):
        line += f" -> {'next' if event.get('automatic', True) else 'stopped; next would be'}: {event['next']}"
    return line


def _now() -> str:
    return clock.now()


def _record_event(record, event: dict) -> None:
    if record is None:
        return
    record.data.setdefault("fallbacks", []).append(event)
    record.save()


def _emit(event: dict, events: list, record, on_step) -> None:
    events.append(event)
    _record_event(record, event)
    if on_step is not None:
        on_step(dict(event))


def run_with_fallback(choice: ModelChoice, cfg: TrainConfig, attempt: Callable[[Rung], Any], *,
                      automatic: bool = True, on_step: Callable[[dict], Any] | None = None,
                      record=None, min_seq_length: int | None = None,
                      cleanup: Callable[[], Any] | None = None,
                      rungs: Sequence[Rung] | None = None) -> FallbackResult:
    """Call ``attempt(rung)`` for each rung of :func:`ladder` until one does not run out of memory.

    **Contract:** ``attempt`` covers everything that can run out of memory for one rung: loading
    the model (``rung.choice``, ``rung.cfg.max_seq_length``, ``rung.cfg.load_in_4bit``/``load_in_8bit``), adding
    LoRA, tokenizing at ``rung.cfg.max_seq_length``, training with ``rung.cfg`` and evaluating.
    Load inside it, never before: out-of-memory while loading is caught only there. It should
    keep no reference to the model after it fails; otherwise pass ``cleanup`` (e.g.
    ``FineTuneRun.free``), which runs after every out-of-memory before memory is freed.

    On out-of-memory (:func:`is_oom`) at any stage: memory is freed, a warning names what failed
    and what comes next, ``on_step(event)`` is called, and the event is appended to
    ``record.data["fallbacks"]`` in run.json (``record``: a :class:`helpers.runrecord.RunRecord`,
    whose "failed" status from the phase that ran out of memory is restored). Any other error
    propagates unchanged. With ``automatic=False`` the first out-of-memory raises
    :class:`FallbackStoppedError` listing the next rungs and the parameters that run each. When
    every rung runs out of memory, :class:`FallbackExhaustedError` lists each attempt.
    """
    todo = list(rungs) if rungs is not None else ladder(choice, cfg, min_seq_length=min_seq_length)
    if not todo:
        raise ValueError("rungs is empty: pass at least one Rung, or leave rungs=None to use "
                         "fallback.ladder(choice, cfg).")
    events: list[dict] = []
    failures: list[tuple[Rung, str | None, str]] = []
    last_exc: BaseException | None = None
    total = len(todo)
    for i, rung in enumerate(todo):
        status = record.data.get("status") if record is not None else None
        n_errors = len(record.data.get("errors", [])) if record is not None else 0
        if i:
            log.info("Attempt %d of %d: %s", i + 1, total, rung.describe())
        t0 = time.time()
        try:
            result = attempt(rung)
        except Exception as exc:
            if not is_oom(exc):
                raise
            where = stage_of(exc)
            if where is None and record is not None:
                new = record.data.get("errors", [])[n_errors:]
                where = new[0].get("phase") if new else None
            error = _short_error(exc)
            traceback.clear_frames(exc.__traceback__)  # drop the frames' tensors and models
            last_exc = exc.with_traceback(None)
            del exc
        else:
            if i:
                event = {"event": "succeeded", "attempt": i + 1, "of": total,
                         "rung": rung.describe(), "reason": rung.reason,
                         "settings": rung.settings(), "parameters": dict(rung.parameters),
                         "how_to": rung.how_to(), "seconds": round(time.time() - t0, 1),
                         "time": _now()}
                log.warning("Attempt %d of %d succeeded after out-of-memory: %s (to run it "
                            "directly: %s)", i + 1, total, rung.describe(), rung.how_to())
                _emit(event, events, record, on_step)
            return FallbackResult(result=result, rung=rung, events=events)

        # out of memory: give the memory back before anything else
        if cleanup is not None:
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001 - cleanup must not hide the OOM
                log.warning("cleanup after out-of-memory failed: %s", _short_error(e))
        free_after = free_memory()
        failures.append((rung, where, error))
        nxt = todo[i + 1] if i + 1 < total else None
        if record is not None and status is not None and nxt is not None and automatic:
            record.data["status"] = status  # the run goes on with the next rung
        event = {"event": "out_of_memory", "attempt": i + 1, "of": total, "rung": rung.describe(),
                 "reason": rung.reason, "settings": rung.settings(), "stage": where,
                 "error": error, "seconds": round(time.time() - t0, 1),
                 "free_gb_after": None if free_after is None else round(free_after, 2),
                 "automatic": automatic,
                 "next": nxt.reason if nxt else None,
                 "next_rung": nxt.describe() if nxt else None,
                 "next_parameters": dict(nxt.parameters) if nxt else None,
                 "time": _now()}
        where_txt = f" during {where}" if where else ""
        if nxt is not None:
            log.warning("Out of memory on attempt %d of %d%s (%s): %s. %s: %s.", i + 1, total,
                        where_txt, rung.describe(), error,
                        "Trying next" if automatic else "Stopping (automatic=False); next would be",
                        nxt.reason)
        else:
            log.warning("Out of memory on attempt %d of %d%s (%s): %s. No lighter configuration "
                        "is left.", i + 1, total, where_txt, rung.describe(), error)
        _emit(event, events, record, on_step)
        if nxt is None:
            break
        if not automatic:
            rest = todo[i + 1:]
            lines = "\n".join(f"  {r.index + 1}. {r.reason}: {r.how_to()}" for r in rest)
            raise FallbackStoppedError(
                f"{rung.describe()} ran out of GPU memory{where_txt} ({error}). Automatic fallback "
                f"is off (automatic=False). The next configurations to try, in order, and the "
                f"parameters that run each:\n{lines}\nOr pass automatic=True to try them in this "
                "order by itself.", events, rest) from last_exc

    lines = "\n".join(f"  {r.index + 1}. {r.describe()}{f' during {w}' if w else ''}: {e}"
                      for r, w, e in failures)
    lightest = failures[-1][0]
    raise FallbackExhaustedError(
        f"Every configuration tried ran out of GPU memory ({len(failures)} attempt"
        f"{'s' if len(failures) != 1 else ''}):\n{lines}\n"
        f"Nothing lighter is left on the ladder of {choice.requested.name}. To go further: free "
        "GPU memory held elsewhere (restart the kernel to drop models from earlier cells; "
        "nvidia-smi lists other processes), set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
        "before the first CUDA call to cut fragmentation, set a shorter max_seq_length than "
        f"{lightest.cfg.max_seq_length} yourself (the ladder stops at half the length asked), or "
        f"choose a smaller model than {lightest.choice.requested.name} (model=..., one of "
        f"{', '.join(m for m in models.known_models() if not m.startswith('tiny-'))}).",
        events) from last_exc
