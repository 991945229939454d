"""Auto-configuration: from free memory and the data's token lengths, choose 16-bit, 8-bit or
4-bit loading, batch size and accumulation, gradient checkpointing and the maximum sequence
length, and say why for each.

Precision: 16 bits when they fit (``FIT_MARGIN``); else 8 bits when they fit with room to spare
(``EIGHT_BIT_MARGIN``: an 8-bit run that would be left at batch 1 with checkpointing is slower
than 4 bits at a normal batch, for a small gain in rounding); else 4 bits; each where the
backend loads them (``ModelProfile.no_4bit_transformers``, ``no_8bit``).

The choices are rules of thumb anchored on the profile's VRAM estimates for the backend that will
run (peak LoRA training at its default sequence length and batch; ``ModelProfile.vram_gb``);
:mod:`helpers.training.fallback`'s ladder still catches what they get wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from helpers import data as data_mod
from helpers.data import recipes
from helpers.models import ModelProfile, get_profile, precision
from helpers.runtime import loading, memory

FIT_MARGIN = 1.10       # need this much more than the estimate before calling it a fit
EIGHT_BIT_MARGIN = 1.25  # 8 bits only with this much (1 + TIGHT_HEADROOM): else 4 bits
TIGHT_HEADROOM = 0.25   # less spare memory than this (share of the need): checkpointing on
ROOMY_HEADROOM = 0.50   # more than this: a bigger batch (fewer accumulation steps)
MAX_BATCH = 16


@dataclass
class AutoChoice:
    load_in_4bit: bool
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    max_seq_length: int
    reasons: list[str] = field(default_factory=list)
    load_in_8bit: bool = False

    @property
    def bits(self) -> int:
        return precision.bits(self.load_in_4bit, self.load_in_8bit)

    def overrides(self) -> dict[str, Any]:
        """Settings for :func:`helpers.train.resolve_config`."""
        return {"load_in_4bit": self.load_in_4bit, "load_in_8bit": self.load_in_8bit,
                "batch_size": self.batch_size,
                "grad_accum": self.grad_accum, "gradient_checkpointing": self.gradient_checkpointing,
                "max_seq_length": self.max_seq_length}

    def __str__(self) -> str:
        head = (f"{precision.label(self.bits)}, batch {self.batch_size} x "
                f"accumulation {self.grad_accum}, max_seq_length {self.max_seq_length}, "
                f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}")
        return head + "".join(f"\n  - {r}" for r in self.reasons)


def auto_configure(profile: ModelProfile | str, *, free_gb: float | None,
                   length_report: dict | None = None, effective_batch: int | None = None,
                   backend: str | None = None) -> AutoChoice:
    """Choose memory settings for ``profile`` given ``free_gb`` (the driver's free memory; None
    without CUDA) and an optional :func:`helpers.recipes.length_report` of the training set.

    ``backend`` is the one that will run (``unsloth`` or ``transformers``, as
    :func:`helpers.train.select_backend` resolves it; None: Unsloth's estimates): the sizes are
    the profile's for that backend, and 4 bits is never chosen where that backend cannot load
    them (``ModelProfile.no_4bit_transformers``), nor 8 bits where ``ModelProfile.no_8bit``
    says so. Precision: 16 bits if they fit, else 8 if they fit with room to spare
    (``EIGHT_BIT_MARGIN``), else 4 (see the module docstring)."""
    p = get_profile(profile)
    reasons: list[str] = []
    effective = effective_batch or p.train.batch_size * p.train.grad_accum
    seq = p.max_seq_length
    if length_report:
        rec = int(length_report["recommended_max_seq_length"])
        if rec < seq:
            reasons.append(f"max_seq_length {seq} -> {rec}: the data's P95 is {length_report['p95']} "
                           f"tokens and its longest {length_report['max']} "
                           f"({length_report.get('truncated_at_recommended', 0)} examples truncated)")
            seq = rec
        elif rec > seq:
            reasons.append(f"max_seq_length stays {seq} (the profile's limit) although the data "
                           f"suggests {rec}: longer examples are truncated and counted")
    # longer or shorter sequences than the profile's default scale the activation memory
    seq_room = max(1, p.max_seq_length // max(seq, 1))

    if free_gb is None:
        batch = min(p.train.batch_size * seq_room, effective, MAX_BATCH)
        reasons.append("no CUDA GPU: 16-bit weights (4 and 8 bits need CUDA), no gradient checkpointing "
                       "(memory is not the limit on a CPU, it would only slow training)")
        return AutoChoice(False, batch, math.ceil(effective / batch), False, seq, reasons)

    need16, need4 = p.vram_gb(False, backend), p.vram_gb(True, backend)
    need8 = p.vram_gb(backend=backend, bits=8)
    on = f" on {backend}" if backend else ""
    can4 = not (backend == "transformers" and p.no_4bit_transformers)
    can8 = not p.no_8bit and need8 < need16
    eight = False
    nxt = f" ({', '.join(p.fallbacks)})" if p.fallbacks else ""
    ladder = ("the out-of-memory ladder will shorten sequences, then batch, then try lighter "
              f"models{nxt}")
    if need16 * FIT_MARGIN <= free_gb:
        four, need = False, need16
        reasons.append(f"16-bit: needs ~{need16:.1f} GB{on} and {free_gb:.1f} GB are free (no "
                       "quantisation error)")
    elif can8 and (need8 * EIGHT_BIT_MARGIN <= free_gb
                   or (not can4 and need8 * FIT_MARGIN <= free_gb)):
        four, eight, need = False, True, need8
        spare = ("with room to spare" if need8 * EIGHT_BIT_MARGIN <= free_gb
                 else f"and 4-bit cannot run on the {backend} backend")
        reasons.append(f"8-bit: 16-bit needs ~{need16:.1f} GB{on} but only {free_gb:.1f} GB are "
                       f"free; 8-bit needs ~{need8:.1f} GB, {spare} (less rounding than 4-bit)")
    elif not can4:
        four, need = False, need16
        reasons.append(f"16-bit, and still tight: ~{need16:.1f} GB needed{on}, {free_gb:.1f} GB "
                       f"free; 4-bit cannot run on the {backend} backend ({p.no_4bit_transformers}; "
                       f"backend='unsloth' loads it in ~{p.vram_gb(True, 'unsloth'):.1f} GB); "
                       + ladder)
    elif need4 * FIT_MARGIN <= free_gb:
        four, need = True, need4
        reasons.append(f"4-bit (QLoRA): 16-bit needs ~{need16:.1f} GB{on} but only {free_gb:.1f} GB "
                       f"are free; 4-bit needs ~{need4:.1f} GB")
    else:
        four, need = True, need4
        reasons.append(f"4-bit, and still tight: ~{need4:.1f} GB needed{on}, {free_gb:.1f} GB "
                       f"free; " + ladder)
    headroom = (free_gb - need) / need
    batch = p.train.batch_size * seq_room
    quantized = four or eight
    bits = precision.label(precision.bits(four, eight))
    checkpointing = quantized or headroom < TIGHT_HEADROOM
    if headroom < TIGHT_HEADROOM:
        batch = 1
        reasons.append(f"only {max(headroom, 0):.0%} memory to spare: batch 1 with gradient "
                       "checkpointing (recomputes activations instead of storing them)")
    elif headroom > ROOMY_HEADROOM:
        batch *= 2
        reasons.append(f"{headroom:.0%} memory to spare: a bigger batch, fewer accumulation steps")
        if quantized:
            reasons.append(f"gradient checkpointing on: {bits} models are loaded to fit, "
                           "activations are the next thing to run out")
    elif checkpointing:
        reasons.append(f"gradient checkpointing on for a {bits} model: activations dominate the rest")
    batch = max(1, min(batch, effective, MAX_BATCH))
    accum = math.ceil(effective / batch)
    reasons.append(f"batch {batch} x accumulation {accum} keeps the effective batch at {batch * accum} "
                   f"(asked: {effective})")
    return AutoChoice(four, batch, accum, checkpointing, seq, reasons, load_in_8bit=eight)


def _with_explicit(auto: AutoChoice, explicit: dict[str, Any]) -> dict[str, Any]:
    """The auto choice's settings with every explicit (not None) value put over it; each
    override is added to ``auto.reasons``. Precision is one choice: ``load_in_4bit=True`` or
    ``load_in_8bit=True`` given turns the other off unless it was given too (both True is then
    the settings' error); ``False`` given only rules that precision out (16 bits if it was the
    one chosen)."""
    out = auto.overrides()
    given = {k: v for k, v in explicit.items() if v is not None}
    for on, off in (("load_in_4bit", "load_in_8bit"), ("load_in_8bit", "load_in_4bit")):
        if given.get(on) and off not in given:
            given[off] = False
            if out[off]:
                auto.reasons.append(f"{off}=False: {on}=True was given")
                out[off] = False
    for key, value in given.items():
        if key in out and out[key] != value:
            auto.reasons.append(f"{key}={value} as given (auto-configuration chose {out[key]})")
        out[key] = value
    return out


def suggest(model: str, data_path, *, smoke: bool | None = None, explicit: dict[str, Any] | None = None,
            template_kwargs: dict | None = None,
            backend: str | None = "auto") -> tuple[AutoChoice, dict[str, Any]]:
    """Auto-configuration for a run of ``model`` on the training file ``data_path``: measures the
    data's token lengths with the model's tokenizer and reads the GPU's free memory. ``backend``
    is the run's setting (auto, unsloth, transformers; None: auto), resolved as the run will
    resolve it (:func:`helpers.train.select_backend`) to pick that backend's memory estimates.
    Returns the choice (print it: every setting with its reason) and the settings to train with,
    where the ``explicit`` values (notebook parameters; None = not given) win."""
    runs_on = loading.select_backend(backend or "auto")
    tokenizer, choice = loading.load_tokenizer(model, smoke)
    convs = data_mod.load(data_path, allow_duplicates=True).conversations
    kwargs = choice.profile.template_kwargs if template_kwargs is None else template_kwargs
    report = recipes.length_report(tokenizer, convs, **kwargs)
    auto = auto_configure(choice.profile, free_gb=memory.free_memory_gb(), length_report=report,
                          backend=runs_on)
    return auto, _with_explicit(auto, explicit or {})
