"""The model registry: one profile per model we fine-tune, plus the tiny offline stand-ins.

A profile says where a model lives on the hub, how its chat template renders (its *family*),
what LoRA and training settings suit it on a 24 GB GPU, how it should be sampled, how much
VRAM it needs, and what to fall back to when it does not fit.

Smoke mode (``FINETUNING_SMOKE=1`` or ``smoke=True``) swaps any model for the stand-in of its
family, so the same notebook runs on a CPU in minutes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.models import precision, sizing, sources, standins
from helpers.models.families import FAMILIES  # noqa: F401  (re-export)
from helpers.models.families import MODEL_TYPE_TO_FAMILY as _MODEL_TYPE_TO_FAMILY
from helpers.models.families import TEMPLATE_KWARGS as _TEMPLATE_KWARGS

log = logging.getLogger(__name__)

SMOKE_ENV = "FINETUNING_SMOKE"


class UnknownModelError(ValueError):
    """Raised for a model name that is neither in the registry nor a local model folder."""


class GPURequiredError(RuntimeError):
    """Raised when a full-size model is asked for on a machine without an NVIDIA GPU."""


class UnsupportedLoadError(ValueError):
    """A model/precision/backend combination that would load wrong weights (refused before loading)."""


@dataclass(frozen=True)
class LoraDefaults:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj",
                                       "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainDefaults:
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 2
    grad_accum: int = 4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    #: passes over the data derived from its size (``sizing.epochs_for``) unless ``epochs`` is set
    epochs_from_data: bool = False


@dataclass(frozen=True)
class InferenceDefaults:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    template_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelProfile:
    """Everything the pipeline needs to know about one model."""

    name: str
    display_name: str
    family: str
    hub_id: str | None
    hub_id_4bit: str | None
    max_seq_length: int
    load_in_4bit: bool
    vram_gb_4bit: float
    vram_gb_16bit: float
    lora: LoraDefaults = LoraDefaults()
    train: TrainDefaults = TrainDefaults()
    inference: InferenceDefaults = InferenceDefaults()
    #: keyword arguments for ``apply_chat_template`` when rendering training data
    template_kwargs: dict = field(default_factory=dict)
    #: models to try, in order, when this one does not fit in memory
    fallbacks: tuple[str, ...] = ()
    #: the tiny stand-in used in smoke mode
    standin: str | None = None
    is_standin: bool = False
    #: peak VRAM in 4 bits on the transformers backend when it differs from ``vram_gb_4bit``
    #: (Unsloth's): transformers' bitsandbytes integration quantizes ``nn.Linear`` only, so the
    #: 3-D expert parameters of a mixture-of-experts model stay in 16 bits there
    vram_gb_4bit_transformers: float | None = None
    #: why 4-bit loading through the transformers backend would load wrong weights ("" if it works)
    no_4bit_transformers: str = ""
    #: why 8-bit loading would load something else than asked, on either backend ("" if it works)
    no_8bit: str = ""
    #: peak VRAM in 8 bits where the general rule does not hold (:mod:`helpers.models.precision`)
    vram_gb_8bit: float | None = None
    #: other hub ids that name this model (``get_profile``)
    aliases: tuple[str, ...] = ()
    #: parameters (from the config's shapes; None where unknown)
    params: int | None = None
    #: why each default was chosen, for models whose defaults come from their size
    reasons: dict = field(default_factory=dict)

    def cpu_memory_gb(self) -> float:
        """Peak memory for LoRA training without a GPU, where weights are held in 32 bits."""
        if self.is_standin:
            return 0.5
        if self.params:
            return sizing.training_memory_gb(self.params, 32)
        return self.vram_gb_16bit * 2

    @property
    def needs_gpu(self) -> bool:
        """Whether this model is too big to train on this machine without a GPU (its 32-bit
        estimate above 90% of the machine's memory)."""
        if self.is_standin:
            return False
        machine = sizing.machine_memory_gb()
        return not machine or self.cpu_memory_gb() > 0.9 * machine

    def loads_4bit(self, backend: str | None = None) -> bool:
        """Whether 4-bit loading works on ``backend`` (None: Unsloth's numbers, the default)."""
        return bool(self.hub_id_4bit) and not (backend == "transformers" and self.no_4bit_transformers)

    def vram_gb(self, load_in_4bit: bool | None = None, backend: str | None = None, *,
                bits: int | None = None) -> float:
        """Estimated peak VRAM for LoRA training at the profile's defaults, in GB, on ``backend``
        ("unsloth" or "transformers"; None: the Unsloth estimate), at ``bits`` (4, 8 or 16; None:
        4 or 16 per ``load_in_4bit``, None there: the profile's default). A precision ``backend``
        cannot load reads as the 16-bit estimate (:func:`helpers.models.precision.vram_gb`)."""
        four = self.load_in_4bit if load_in_4bit is None else load_in_4bit
        return precision.vram_gb(self, bits or (4 if four else 16), backend)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Inference presets by family (the model makers' recommendations).
_QWEN3_CHAT = InferenceDefaults(temperature=0.7, top_p=0.8, top_k=20,
                                template_kwargs={"enable_thinking": False})
QWEN3_THINKING = InferenceDefaults(temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=1024,
                                   template_kwargs={"enable_thinking": True})
_QWEN25_CHAT = InferenceDefaults(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
_GPT_OSS_CHAT = InferenceDefaults(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=512,
                                  template_kwargs={"reasoning_effort": "low"})

def _profile(**kw) -> ModelProfile:
    kw.setdefault("template_kwargs", dict(_TEMPLATE_KWARGS[kw["family"]]))
    return ModelProfile(**kw)


_REAL = [
    _profile(
        name="gpt-oss-20b", params=20_910_000_000, display_name="GPT-OSS 20B", family="gpt-oss",
        hub_id="openai/gpt-oss-20b", hub_id_4bit="unsloth/gpt-oss-20b-unsloth-bnb-4bit",
        max_seq_length=2048, load_in_4bit=True, vram_gb_4bit=14.0, vram_gb_16bit=44.0,
        lora=LoraDefaults(r=16, alpha=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
        train=TrainDefaults(epochs=1, learning_rate=2e-4, batch_size=1, grad_accum=8),
        inference=_GPT_OSS_CHAT, standin="tiny-gpt-oss",
        # read in source (unsloth_zoo temporary_patches/gpt_oss.py GptOssExpertsBnb4bit,
        # GptOssTopKRouter): the -unsloth-bnb-4bit repo has per-expert Linear4bit layers
        # (experts.gate_up_projs.N) and router.linear; transformers' GptOssExperts has fused 3-D
        # parameters and router.weight, with no conversion between them
        no_4bit_transformers=(
            "unsloth/gpt-oss-20b-unsloth-bnb-4bit stores its experts as per-expert linear layers "
            "(experts.gate_up_projs.N) and its router as router.linear, which plain transformers "
            "does not map, so experts and router would load randomly initialised; and bitsandbytes "
            "quantizes nn.Linear only, so quantizing openai/gpt-oss-20b would leave its ~19B "
            "expert parameters in 16 bits"),
        no_8bit=precision.GPT_OSS_NO_8BIT,
    ),
    _profile(
        name="qwen3-14b", params=14_770_000_000, display_name="Qwen3-14B", family="qwen3",
        hub_id="Qwen/Qwen3-14B", hub_id_4bit="unsloth/Qwen3-14B-unsloth-bnb-4bit",
        max_seq_length=2048, load_in_4bit=True, vram_gb_4bit=13.5, vram_gb_16bit=34.0,
        lora=LoraDefaults(r=16, alpha=16),
        train=TrainDefaults(epochs=1, learning_rate=2e-4, batch_size=2, grad_accum=4),
        inference=_QWEN3_CHAT, standin="tiny-qwen3",
    ),
    _profile(
        name="qwen3-32b", params=32_760_000_000, display_name="Qwen3-32B", family="qwen3",
        # Unsloth's loader remaps the dynamic quant unsloth/Qwen3-32B-unsloth-bnb-4bit to this one
        # ("32B dynamic quant is way too big", unsloth/models/loader_utils.py BAD_MAPPINGS): both
        # backends load the plain bnb-4bit repo
        hub_id="Qwen/Qwen3-32B", hub_id_4bit="unsloth/Qwen3-32B-bnb-4bit",
        aliases=("unsloth/Qwen3-32B-unsloth-bnb-4bit",),
        max_seq_length=1024, load_in_4bit=True, vram_gb_4bit=21.0, vram_gb_16bit=72.0,
        lora=LoraDefaults(r=32, alpha=32),
        train=TrainDefaults(epochs=3, learning_rate=2e-4, batch_size=1, grad_accum=8),
        inference=_QWEN3_CHAT, fallbacks=("qwen3-30b-a3b", "qwen3-14b"), standin="tiny-qwen3",
    ),
    _profile(
        name="qwen3-30b-a3b", params=30_530_000_000, display_name="Qwen3-30B-A3B (MoE)", family="qwen3",
        # Unsloth remaps unsloth/Qwen3-30B-A3B-bnb-4bit to the 16-bit unsloth/Qwen3-30B-A3B and
        # quantizes it while loading ("We rather do it on the fly", loader_utils.py BAD_MAPPINGS),
        # its experts too (unsloth_zoo temporary_patches/moe_utils_bnb4bit.py): 19 GB. Plain
        # transformers quantizes nn.Linear only (integrations/bitsandbytes.py
        # replace_with_bnb_linear); the ~29B expert parameters (3-D nn.Parameters of
        # Qwen3MoeExperts) stay bf16: about 66 GB minus ~1 GB of 4-bit attention.
        hub_id="Qwen/Qwen3-30B-A3B", hub_id_4bit="unsloth/Qwen3-30B-A3B",
        aliases=("unsloth/Qwen3-30B-A3B-bnb-4bit", "unsloth/Qwen3-30B-A3B-unsloth-bnb-4bit"),
        vram_gb_4bit_transformers=65.0, vram_gb_8bit=65.0,  # 8 bits: experts bf16 on both backends
        max_seq_length=1024, load_in_4bit=True, vram_gb_4bit=19.0, vram_gb_16bit=66.0,
        lora=LoraDefaults(r=32, alpha=32, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
        train=TrainDefaults(epochs=3, learning_rate=2e-4, batch_size=1, grad_accum=8),
        inference=_QWEN3_CHAT, fallbacks=("qwen3-14b",), standin="tiny-qwen3",
    ),
    _profile(
        name="qwen2.5-3b", params=3_090_000_000, display_name="Qwen2.5-3B-Instruct", family="qwen2.5",
        hub_id="Qwen/Qwen2.5-3B-Instruct", hub_id_4bit="unsloth/Qwen2.5-3B-Instruct-bnb-4bit",
        max_seq_length=512, load_in_4bit=False, vram_gb_4bit=4.0, vram_gb_16bit=9.0,
        lora=LoraDefaults(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj")),
        train=TrainDefaults(epochs=10, learning_rate=1e-3, batch_size=4, grad_accum=1),
        inference=_QWEN25_CHAT, standin="tiny-qwen2.5",
    ),
]


def sized_profile(*, name: str, display_name: str, family: str, params: int, hub_id: str | None,
                  hub_id_4bit: str | None = None, max_seq_length: int = 1024,
                  inference: InferenceDefaults | None = None, **kw) -> ModelProfile:
    """A profile whose LoRA and training defaults come from the model's size
    (:mod:`helpers.models.sizing`: the rules and their reasons), for small registry models and
    for any model outside the registry."""
    d = sizing.sized_defaults(params)
    mem16 = sizing.training_memory_gb(params, 16)
    return _profile(
        name=name, display_name=display_name, family=family, hub_id=hub_id, hub_id_4bit=hub_id_4bit,
        max_seq_length=max_seq_length, load_in_4bit=False, params=params, reasons=d.reasons,
        vram_gb_4bit=sizing.training_memory_gb(params, 4), vram_gb_16bit=mem16,
        lora=LoraDefaults(r=d.lora_r, alpha=d.lora_alpha),
        train=TrainDefaults(epochs=3, learning_rate=d.learning_rate, batch_size=d.batch_size,
                            grad_accum=d.grad_accum, warmup_ratio=d.warmup_ratio,
                            epochs_from_data=True),
        inference=inference or _FAMILY_INFERENCE[family], standin=STANDIN_FOR_FAMILY[family], **kw)


_FAMILY_INFERENCE = {"qwen2.5": _QWEN25_CHAT, "qwen3": _QWEN3_CHAT, "gpt-oss": _GPT_OSS_CHAT}
STANDIN_FOR_FAMILY = {"qwen2.5": "tiny-qwen2.5", "qwen3": "tiny-qwen3", "gpt-oss": "tiny-gpt-oss"}

# Small real models that train without a GPU (a laptop's CPU or an Apple GPU): defaults from
# their size. Parameter counts from their configs (sizing.parameter_count).
_SMALL = [
    sized_profile(name="qwen2.5-0.5b", display_name="Qwen2.5-0.5B-Instruct", family="qwen2.5",
                  params=494_032_768, hub_id="Qwen/Qwen2.5-0.5B-Instruct",
                  hub_id_4bit="unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit"),
    sized_profile(name="qwen2.5-1.5b", display_name="Qwen2.5-1.5B-Instruct", family="qwen2.5",
                  params=1_543_714_304, hub_id="Qwen/Qwen2.5-1.5B-Instruct",
                  hub_id_4bit="unsloth/Qwen2.5-1.5B-Instruct-bnb-4bit"),
    sized_profile(name="qwen3-0.6b", display_name="Qwen3-0.6B", family="qwen3",
                  params=596_049_920, hub_id="Qwen/Qwen3-0.6B",
                  hub_id_4bit="unsloth/Qwen3-0.6B-unsloth-bnb-4bit"),
    sized_profile(name="qwen3-1.7b", display_name="Qwen3-1.7B", family="qwen3",
                  params=1_720_574_976, hub_id="Qwen/Qwen3-1.7B",
                  hub_id_4bit="unsloth/Qwen3-1.7B-unsloth-bnb-4bit"),
]

# Stand-ins: settings that make a few minutes of CPU training meaningful on a ~1M-parameter model.
# Measured on the Mariya data (tiny-qwen2.5, 2 cores): r16 lr 5e-3 20 epochs -> recall 0.87;
# r32/alpha64 lr 5e-3 20 epochs -> 0.97 padded (119 s) but 0.93 padding-free; 24 epochs
# padding-free -> 0.97 (192 s); lr 1e-2 16 epochs -> 0.53.
_STANDIN_LORA = LoraDefaults(r=32, alpha=64, dropout=0.0)
_STANDIN_TRAIN = TrainDefaults(epochs=24, learning_rate=5e-3, batch_size=8, grad_accum=1,
                               warmup_ratio=0.05)
_STANDINS = [
    _profile(name="tiny-qwen2.5", display_name="tiny Qwen2.5 stand-in", family="qwen2.5",
             hub_id=None, hub_id_4bit=None, max_seq_length=1024, load_in_4bit=False,
             vram_gb_4bit=0.1, vram_gb_16bit=0.1, lora=_STANDIN_LORA, train=_STANDIN_TRAIN,
             inference=dataclasses.replace(_QWEN25_CHAT, max_new_tokens=64), is_standin=True),
    _profile(name="tiny-qwen3", display_name="tiny Qwen3 stand-in", family="qwen3",
             hub_id=None, hub_id_4bit=None, max_seq_length=1024, load_in_4bit=False,
             vram_gb_4bit=0.1, vram_gb_16bit=0.1, lora=_STANDIN_LORA, train=_STANDIN_TRAIN,
             inference=dataclasses.replace(_QWEN3_CHAT, max_new_tokens=64), is_standin=True),
    _profile(name="tiny-gpt-oss", display_name="tiny GPT-OSS stand-in", family="gpt-oss",
             hub_id=None, hub_id_4bit=None, max_seq_length=1024, load_in_4bit=False,
             vram_gb_4bit=0.1, vram_gb_16bit=0.1,
             lora=dataclasses.replace(_STANDIN_LORA,
                                      target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
             train=_STANDIN_TRAIN,
             inference=dataclasses.replace(_GPT_OSS_CHAT, max_new_tokens=64), is_standin=True),
]

REGISTRY: dict[str, ModelProfile] = {p.name: p for p in _REAL + _SMALL + _STANDINS}
STANDIN_BY_FAMILY = {p.family: p.name for p in _STANDINS}


def known_models() -> list[str]:
    return sorted(REGISTRY)


def get_profile(name: str) -> ModelProfile:
    """The profile for ``name``: a registry name or one of its hub ids (case-insensitive), a
    local model folder (holding config.json), a ``.gguf`` file, or any other hub id (its config
    read from the hub, or from the local Hugging Face cache offline). Models outside the
    registry get defaults derived from their size (:func:`profile_for_config`).

    >>> get_profile("Qwen/Qwen2.5-3B-Instruct").name
    'qwen2.5-3b'
    """
    if isinstance(name, ModelProfile):
        return name
    key = str(name).strip().lower()
    if key in REGISTRY:
        return REGISTRY[key]
    for p in REGISTRY.values():
        if key in {(p.hub_id or "").lower(), (p.hub_id_4bit or "").lower(),
                   *(a.lower() for a in p.aliases)}:
            return p
    path = Path(str(name)).expanduser()
    if (path / "config.json").is_file():
        return profile_for_folder(path)
    if sources.is_gguf(name):
        config = sources.gguf_config(path)
        profile = profile_for_config(config, name=str(path), display_name=path.name,
                                     source=str(path.resolve()))
        sources.check_template(path, profile.family, config.get("model_type"),
                               template=sources.gguf_chat_template(path))
        return profile
    if sources.looks_like_hub_id(str(name)):
        repo = str(name).strip()
        config = sources.hub_config(repo)
        profile = profile_for_config(config, name=repo, display_name=repo.split("/")[-1],
                                     source=repo)
        sources.check_template(repo, profile.family, config.get("model_type"),
                               template=sources.hub_chat_template(repo))
        return profile
    raise UnknownModelError(
        f"Unknown model {name!r}. Known models: {', '.join(known_models())}. "
        "Pass one of these names, a hub id (owner/name), a local folder holding config.json or "
        "a .gguf file as `model`; to tune a model's defaults, add a ModelProfile to "
        "helpers/models/__init__.py.")


def _family_of(config: dict, where: str) -> str:
    model_type = config.get("model_type", "")
    family = _MODEL_TYPE_TO_FAMILY.get(model_type)
    if family is None:
        raise UnknownModelError(
            f"{where} has model_type {model_type!r}, which no family here handles "
            f"(known: {', '.join(sorted(_MODEL_TYPE_TO_FAMILY))}). A family needs a chat template "
            "and a stand-in (helpers/models/families.py).")
    return family


#: below this many parameters a folder is taken for a stand-in (the stand-ins have about 1M;
#: the smallest real chat models 135M and up)
STANDIN_MAX_PARAMS = 20_000_000


def profile_for_config(config: dict, *, name: str, display_name: str, source: str) -> ModelProfile:
    """A profile for a model outside the registry, from its ``config.json``: the family from
    ``model_type``, the size from its shapes, and LoRA/training defaults from the size
    (:func:`sized_profile`). A model as small as the stand-ins gets the stand-in recipe."""
    family = _family_of(config, name)
    params = sizing.parameter_count(config)
    if params < STANDIN_MAX_PARAMS:
        base = REGISTRY[STANDIN_BY_FAMILY[family]]
        return dataclasses.replace(base, name=name, display_name=display_name, hub_id=source,
                                   params=params)
    max_len = min(int(config.get("max_position_embeddings") or 2048), 2048)
    return sized_profile(name=name, display_name=display_name, family=family, params=params,
                         hub_id=source, max_seq_length=max_len)


def profile_for_folder(path: str | os.PathLike) -> ModelProfile:
    """A profile for a local model folder (see :func:`profile_for_config`); its own chat
    template, where it has one, must render its family's format."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    profile = profile_for_config(config, name=str(path), display_name=path.name, source=str(path))
    sources.check_template(path, profile.family, config.get("model_type"))
    return profile


def smoke_mode(smoke: bool | None = None) -> bool:
    """Whether to run on stand-ins: the explicit argument wins, else ``FINETUNING_SMOKE``."""
    if smoke is not None:
        return bool(smoke)
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@dataclass(frozen=True)
class ModelChoice:
    """What a notebook asked for and what it will actually run."""

    requested: ModelProfile
    profile: ModelProfile   # the stand-in in smoke mode, else ``requested``
    smoke: bool

    @property
    def family(self) -> str:
        return self.profile.family

    def source(self, load_in_4bit: bool | None = None, backend: str | None = None, *,
               load_in_8bit: bool = False) -> str:
        """A hub id or local folder that ``from_pretrained`` can load (builds a stand-in): the
        4-bit checkpoint when the run loads in 4 bits (``load_in_4bit``; None: the profile's
        default), else the 16-bit one (8 bits are quantized from it while loading).
        ``backend="transformers"`` refuses a 4-bit load that transformers would get wrong, and
        ``load_in_8bit`` one that ``no_8bit`` names (:class:`UnsupportedLoadError`)."""
        p = self.profile
        if load_in_8bit and p.no_8bit:
            raise UnsupportedLoadError(precision.refuse_8bit(p))
        if p.is_standin and p.name in REGISTRY:
            return str(standins.ensure(p.name))
        if p.hub_id and sources.is_gguf(p.hub_id):
            return str(sources.gguf_folder(p.hub_id))
        if p.hub_id and Path(p.hub_id).is_dir():
            return p.hub_id
        four = p.load_in_4bit if load_in_4bit is None else bool(load_in_4bit)
        if four and backend == "transformers" and p.no_4bit_transformers:
            raise UnsupportedLoadError(
                f"{p.display_name} in 4 bits (load_in_4bit=True) cannot be loaded by the "
                f"transformers backend: {p.no_4bit_transformers}. Use backend='unsloth' "
                "(--backend unsloth; one GPU) for 4-bit QLoRA, or load_in_4bit=False "
                f"(16 bits, about {p.vram_gb_16bit:.0f} GB of GPU memory) with the "
                "transformers backend (which every multi-process run uses).")
        return p.hub_id_4bit if four and p.hub_id_4bit else p.hub_id

    def describe(self) -> str:
        if self.smoke and self.requested is not self.profile:
            return (f"{self.requested.display_name} -> smoke mode: "
                    f"{self.profile.display_name} ({self.profile.name})")
        return self.profile.display_name


def choose(model: str, smoke: bool | None = None) -> ModelChoice:
    """Resolve a model name for this run, honouring smoke mode.

    Raises :class:`UnknownModelError` for a name not in the registry.
    """
    requested = get_profile(model)
    use_smoke = smoke_mode(smoke)
    if use_smoke and not requested.is_standin:
        profile = REGISTRY[STANDIN_BY_FAMILY[requested.family]]
    else:
        profile = requested
    return ModelChoice(requested=requested, profile=profile, smoke=use_smoke)


def mps_available() -> bool:
    """Whether an Apple-silicon GPU (Metal) can run torch here."""
    try:
        import torch
    except ImportError:
        return False
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def device() -> str:
    """Where training and generation run: an NVIDIA GPU ("cuda"), else an Apple GPU ("mps"),
    else the CPU."""
    if cuda_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


SMALL_MODELS = ("qwen2.5-0.5b", "qwen3-0.6b", "qwen2.5-1.5b", "qwen3-1.7b")


def require_gpu(choice: ModelChoice) -> None:
    """Without an NVIDIA GPU, stop with a clear message when the model is too big for this
    machine's memory (its 32-bit estimate, :meth:`ModelProfile.needs_gpu`); a small model runs
    on the Apple GPU or the CPU."""
    if not choice.profile.needs_gpu or cuda_available():
        return
    p = choice.profile
    raise GPURequiredError(
        f"{p.display_name} needs an NVIDIA GPU with about {p.vram_gb():.0f} GB of memory, and "
        "none was found (torch.cuda.is_available() is False); without one it would need about "
        f"{p.cpu_memory_gb():.0f} GB of memory and this machine has "
        f"{sizing.machine_memory_gb():.0f} GB. To run this notebook on a CPU with "
        f"the tiny {p.family} stand-in instead, use smoke mode: set FINETUNING_SMOKE=1 in the "
        "environment (FINETUNING_SMOKE=1 jupyter lab, or FINETUNING_SMOKE=1 jupyter nbconvert "
        "--to notebook --execute NOTEBOOK), or pass the papermill parameter "
        "`-p smoke True`. A small real model trains without a GPU: "
        f"`model` = {', '.join(SMALL_MODELS)}.")
