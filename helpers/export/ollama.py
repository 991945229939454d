"""Ollama: the ``Modelfile`` for a GGUF export (``ollama create NAME -f Modelfile``), with the
family's chat template as a Go template, its stop tokens and the profile's sampling settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from helpers.export.gguf import FAMILY_FOR_GGUF_ARCH, gguf_header
from helpers.models import REGISTRY, STANDIN_BY_FAMILY
from helpers.models.standins import SPECS

log = logging.getLogger(__name__)

#: Ollama Modelfile PARAMETER names we accept (https://github.com/ollama/ollama/blob/main/docs/modelfile.md)
OLLAMA_PARAMETERS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n",
                     "num_ctx", "num_predict", "seed", "stop")

_CHATML_TURNS = (
    '{{- range .Messages }}\n'
    '{{- if eq .Role "user" }}<|im_start|>user\n'
    '{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n'
    '{{ .Content }}<|im_end|>\n'
    '{{ end }}\n'
    '{{- end }}<|im_start|>assistant\n'
)
#: Go templates rendering the same text as helpers/chat_templates/<family>.jinja for system, user
#: and assistant messages (tests/test_export.py renders both and compares)
OLLAMA_TEMPLATES = {
    "qwen2.5": (
        '{{- if .System }}<|im_start|>system\n'
        '{{ .System }}<|im_end|>\n'
        '{{ else }}<|im_start|>system\n'
        'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n'
        '{{ end }}\n' + _CHATML_TURNS),
    "qwen3": (
        '{{- if .System }}<|im_start|>system\n'
        '{{ .System }}<|im_end|>\n'
        '{{ end }}\n' + _CHATML_TURNS),
}
_QWEN3_NO_THINK = "<think>\n\n</think>\n\n"


def ollama_template(family: str, template_kwargs: dict | None = None) -> str:
    """The Modelfile TEMPLATE for ``family``; Qwen3 with ``enable_thinking=False`` gets the empty
    think block its chat template puts after the generation prompt."""
    if family not in OLLAMA_TEMPLATES:
        raise NotImplementedError(f"No Ollama template for family {family!r} (known: "
                                  f"{', '.join(OLLAMA_TEMPLATES)}).")
    template = OLLAMA_TEMPLATES[family]
    if family == "qwen3" and (template_kwargs or {}).get("enable_thinking", True) is False:
        template += _QWEN3_NO_THINK
    return template


def _family_of_gguf(gguf_path: Path) -> str:
    arch = gguf_header(gguf_path).get("general.architecture")
    if arch not in FAMILY_FOR_GGUF_ARCH:
        raise NotImplementedError(f"{gguf_path} has architecture {arch!r}; Modelfiles are written "
                                  f"for {', '.join(FAMILY_FOR_GGUF_ARCH)} only.")
    return FAMILY_FOR_GGUF_ARCH[arch]


def family_profile(family: str):
    """The stand-in profile of ``family``: its chat format, stop tokens and inference settings."""
    return REGISTRY[STANDIN_BY_FAMILY[family]]


def _quote(value: str, what: str) -> str:
    if '"""' in value:
        raise ValueError(f'The {what} contains """, which a Modelfile cannot quote.')
    return f'"""{value}"""'


def write_modelfile(gguf_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    system_prompt: str | None = None, params: dict[str, Any] | None = None, *,
                    profile=None) -> Path:
    """Write an Ollama ``Modelfile`` for ``gguf_path`` into ``out_dir`` (default: the GGUF's
    folder); returns its path. ``ollama create NAME -f Modelfile`` then makes the model.

    TEMPLATE renders the family's chat format, PARAMETER stop lists the family's stop tokens,
    temperature/top_p/top_k (and repeat_penalty where it is not 1) come from the profile's
    inference settings (``profile`` default: the family's, from the GGUF's architecture), then
    ``params`` (Ollama PARAMETER names) override them. SYSTEM is written when given.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"No GGUF file at {gguf_path}; make one with export_gguf.")
    out = Path(out_dir) if out_dir is not None else gguf_path.parent
    unknown = sorted(set(params or {}) - set(OLLAMA_PARAMETERS))
    if unknown:
        raise ValueError(f"Unknown Modelfile parameter(s): {', '.join(unknown)}. "
                         f"Known: {', '.join(OLLAMA_PARAMETERS)}.")
    family = profile.family if profile is not None else _family_of_gguf(gguf_path)
    profile = profile or family_profile(family)
    inf = profile.inference
    values: dict[str, Any] = {"temperature": inf.temperature, "top_p": inf.top_p}
    if inf.top_k:
        values["top_k"] = inf.top_k
    if inf.repetition_penalty and inf.repetition_penalty != 1.0:
        values["repeat_penalty"] = inf.repetition_penalty
    stops = list(SPECS[family_profile(family).name].stop_tokens)
    extra = dict(params or {})
    extra_stops = extra.pop("stop", None)
    if extra_stops:
        stops += [s for s in ([extra_stops] if isinstance(extra_stops, str) else extra_stops)
                  if s not in stops]
    values.update(extra)

    out.mkdir(parents=True, exist_ok=True)
    try:
        rel = os.path.relpath(gguf_path.resolve(), out.resolve())
        source = rel if rel.startswith("..") else f"./{rel}"
    except ValueError:  # another drive on Windows
        source = str(gguf_path.resolve())
    lines = [f"FROM {source}", "",
             f"TEMPLATE {_quote(ollama_template(family, inf.template_kwargs), 'template')}", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in values.items()]
    if system_prompt:
        lines += ["", f"SYSTEM {_quote(system_prompt, 'system prompt')}"]
    path = out / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("Ollama Modelfile written to %s (ollama create NAME -f %s)", path, path)
    return path
