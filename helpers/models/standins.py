"""Tiny offline stand-ins for each model family, built from text this project ships.

A stand-in has the real family's model class (``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
``GptOssForCausalLM``), a chat template that renders the same text as the real one, and a small
byte-level BPE tokenizer (about 2k tokens) that splits text with the family's own pre-tokenizer
regex. It is pre-trained for a minute or so on general English and chat examples, because LoRA
on random weights learns nothing. Each is built once and cached on disk under
``$FINETUNING_CACHE`` (default ``~/.cache/finetuning``); the cache key covers everything the
build depends on, so changing a template or the corpus rebuilds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from helpers.models.families import TEMPLATE_KWARGS

log = logging.getLogger(__name__)

BUILDER_VERSION = "3"
CACHE_ENV = "FINETUNING_CACHE"

# The pre-tokenizer regexes of the real tokenizers (Qwen2/Qwen3 share one; GPT-OSS uses o200k's).
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])


@dataclass(frozen=True)
class StandinSpec:
    name: str
    family: str
    model_type: str
    pattern: str
    tokenizer_class: str
    special_tokens: tuple[str, ...]
    added_tokens: tuple[str, ...]  # ordinary (non-special) added tokens, e.g. <think>
    eos_token: str
    pad_token: str
    bos_token: str | None
    stop_tokens: tuple[str, ...]   # generation stops at any of these
    config: dict = field(default_factory=dict)
    vocab_size: int = 2048
    pretrain_steps: int = 500
    block_size: int = 128
    batch_size: int = 16
    learning_rate: float = 3e-3


_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_COMMON = dict(hidden_size=128, intermediate_size=320, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6,
               rope_theta=10000.0)

SPECS: dict[str, StandinSpec] = {
    "tiny-qwen2.5": StandinSpec(
        name="tiny-qwen2.5", family="qwen2.5", model_type="qwen2", pattern=QWEN_PATTERN,
        tokenizer_class="Qwen2Tokenizer", special_tokens=_QWEN_SPECIALS, added_tokens=(),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        config=dict(_COMMON, tie_word_embeddings=True)),
    "tiny-qwen3": StandinSpec(
        name="tiny-qwen3", family="qwen3", model_type="qwen3", pattern=QWEN_PATTERN,
        tokenizer_class="Qwen2Tokenizer", special_tokens=_QWEN_SPECIALS,
        added_tokens=("<think>", "</think>"),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        config=dict(_COMMON, head_dim=32, tie_word_embeddings=True)),
    "tiny-gpt-oss": StandinSpec(
        name="tiny-gpt-oss", family="gpt-oss", model_type="gpt_oss", pattern=O200K_PATTERN,
        tokenizer_class="PreTrainedTokenizerFast",
        special_tokens=("<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>",
                        "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"),
        added_tokens=(), eos_token="<|return|>", pad_token="<|endoftext|>",
        bos_token="<|startoftext|>", stop_tokens=("<|return|>", "<|end|>", "<|call|>"),
        # max_position_embeddings as the real model's, so that its YaRN rope settings agree
        config=dict(_COMMON, head_dim=32, intermediate_size=160, num_local_experts=4,
                    max_position_embeddings=131072,
                    num_experts_per_tok=2, sliding_window=64,
                    layer_types=["sliding_attention", "full_attention"] * 2,
                    tie_word_embeddings=False, router_aux_loss_coef=0.0,
                    output_router_logits=False),
        # MoE + eager attention: ~1 s a step on 2 cores, so fewer steps than the Qwen stand-ins
        block_size=192, pretrain_steps=200),
}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "finetuning")).expanduser()


def _data_text(name: str) -> str:
    return resources.files("helpers").joinpath(name).read_text(encoding="utf-8")


def chat_template(family: str) -> str:
    """The Jinja chat template this project ships for a family."""
    return _data_text(f"chat_templates/{family}.jinja")


def _corpus() -> tuple[list[str], list[dict]]:
    paragraphs = [p.strip() for p in _data_text("standin_data/general.txt").split("\n\n") if p.strip()]
    chats = [json.loads(line) for line in _data_text("standin_data/chat.jsonl").splitlines()
             if line.strip()]
    return paragraphs, chats


def build_key(spec: StandinSpec, pretrain_steps: int) -> str:
    h = hashlib.sha256()
    for part in (BUILDER_VERSION, json.dumps(spec.__dict__, sort_keys=True, default=str),
                 str(pretrain_steps), chat_template(spec.family),
                 _data_text("standin_data/general.txt"), _data_text("standin_data/chat.jsonl")):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def ensure(name: str, *, pretrain_steps: int | None = None) -> Path:
    """Path of the built stand-in ``name``; builds it on first use (about a minute on 2 cores).

    ``pretrain_steps=0`` gives a random-weight model (for tests that only need the shapes).
    """
    if name not in SPECS:
        raise KeyError(f"Unknown stand-in {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    steps = spec.pretrain_steps if pretrain_steps is None else pretrain_steps
    suffix = "" if steps == spec.pretrain_steps else f"-steps{steps}"
    target = cache_root() / "standins" / f"{name}{suffix}-{build_key(spec, steps)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # built by another process while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _build(spec, tmp, steps)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_built(name: str) -> bool:
    """Whether stand-in ``name`` (default pre-training) is in the cache."""
    spec = SPECS[name]
    target = cache_root() / "standins" / f"{name}-{build_key(spec, spec.pretrain_steps)}"
    return (target / "config.json").is_file()


def build_in_background(names: list[str], threads: int = 1):
    """Start building the stand-ins ``names`` that are not cached, in one child process with
    ``threads`` torch threads; returns the process (None when all are built). :func:`ensure`
    in any other process waits for a build in progress (a file lock) instead of repeating it."""
    import subprocess
    import sys
    todo = [n for n in names if not is_built(n)]
    if not todo:
        return None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = ("import logging; logging.basicConfig(level=logging.WARNING); "
            "from helpers.models import standins; "
            f"[standins.ensure(n) for n in {todo!r}]")
    log.info("Building %s in the background (%d thread)", ", ".join(todo), threads)
    return subprocess.Popen([sys.executable, "-c", code], env=env,
                            cwd=str(Path(__file__).resolve().parents[2]))


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_tokenizer(spec: StandinSpec, out_dir: Path):
    """Train the stand-in's BPE tokenizer and save it with its chat template; returns it reloaded."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    paragraphs, chats = _corpus()
    texts = paragraphs + [c["question"] + "\n" + c["answer"] for c in chats]
    # The template's own boilerplate, so that headers cost a handful of tokens as they do for real.
    texts += [chat_template(spec.family)] * 4
    tok = Tokenizer(models.BPE())
    if spec.model_type != "gpt_oss":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec.pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, min_frequency=2,
                                  special_tokens=list(spec.special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.added_tokens])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=spec.eos_token, pad_token=spec.pad_token,
        bos_token=spec.bos_token, chat_template=chat_template(spec.family),
        model_max_length=spec.config["max_position_embeddings"], clean_up_tokenization_spaces=False)
    fast.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = spec.tokenizer_class
    cfg["add_bos_token"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2))
    reloaded = AutoTokenizer.from_pretrained(out_dir)
    probe = texts[:40] + [json.dumps(c) for c in chats[:40]] + ["Hello,  world!\n\n  tabs\tand 1234 numbers"]
    bad = [t for t in probe if reloaded.encode(t, add_special_tokens=False)
           != tok.encode(t, add_special_tokens=False).ids]
    if bad:
        raise RuntimeError(f"{spec.name}: the saved tokenizer re-encodes {len(bad)} of {len(probe)} "
                           f"texts differently after reload, e.g. {bad[0][:60]!r}.")
    return reloaded


def _build(spec: StandinSpec, out_dir: Path, steps: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    t0 = time.time()
    log.info("Building stand-in %s (%d pre-training steps) in %s", spec.name, steps, out_dir)
    tokenizer = build_tokenizer(spec, out_dir)
    ids = lambda t: tokenizer.convert_tokens_to_ids(t)  # noqa: E731
    config = AutoConfig.for_model(
        spec.model_type, vocab_size=len(tokenizer), pad_token_id=ids(spec.pad_token),
        eos_token_id=ids(spec.eos_token),
        bos_token_id=ids(spec.bos_token) if spec.bos_token else None, **spec.config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if steps:
        _pretrain(model, tokenizer, spec, steps)
    model.save_pretrained(out_dir)
    GenerationConfig(eos_token_id=[ids(t) for t in spec.stop_tokens],
                     pad_token_id=ids(spec.pad_token),
                     bos_token_id=ids(spec.bos_token) if spec.bos_token else None,
                     do_sample=False).save_pretrained(out_dir)
    (out_dir / "standin.json").write_text(json.dumps({
        "name": spec.name, "family": spec.family, "pretrain_steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.time() - t0, 1), "builder_version": BUILDER_VERSION}, indent=2))
    log.info("Built %s in %.0f s", spec.name, time.time() - t0)


_SYSTEM_PROMPTS = ["You are a helpful assistant.", "You answer questions clearly and briefly.",
                   "You are a knowledgeable guide who explains everyday things."]


def _pretrain(model, tokenizer, spec: StandinSpec, steps: int) -> None:
    """Brief full-parameter training on general prose and rendered chats (packed blocks)."""
    import torch

    paragraphs, chats = _corpus()
    rng = random.Random(0)
    docs = []
    for p in paragraphs:
        docs.append(tokenizer.encode(p + "\n\n", add_special_tokens=False))
    for c in chats:
        for variant in range(2):
            messages = [{"role": "user", "content": c["question"]},
                        {"role": "assistant", "content": c["answer"]}]
            if variant:
                messages.insert(0, {"role": "system", "content": rng.choice(_SYSTEM_PROMPTS)})
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 **_pretrain_template_kwargs(spec.family))
            docs.append(tokenizer.encode(text, add_special_tokens=False))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.learning_rate, total_steps=steps,
                                                pct_start=0.05)
    stream: list[int] = []
    losses = []
    for step in range(steps):
        batch = []
        while len(batch) < spec.batch_size:
            if len(stream) < spec.block_size:
                order = list(range(len(docs)))
                rng.shuffle(order)
                for i in order:
                    stream.extend(docs[i])
            batch.append(stream[:spec.block_size])
            del stream[:spec.block_size]
        x = torch.tensor(batch)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info("%s pre-training step %d/%d loss %.3f", spec.name, step + 1, steps, loss.item())
    model.eval()


def _pretrain_template_kwargs(family: str) -> dict:
    """The family's template options: the ones its stand-in's profile renders with."""
    return dict(TEMPLATE_KWARGS[family])
