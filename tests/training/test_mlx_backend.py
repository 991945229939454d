"""backend="mlx" (issue 14, part 1): the stand-ins loaded into MLX give transformers' logits and
our loss, a few LoRA steps lower the loss, and the adapter written as PEFT (and the fused model)
gives the MLX model's outputs in transformers. Runs on Linux with ``mlx[cpu]``; skipped where
mlx is not installed, except the errors, which need no mlx.

Tolerances: float32 weights on both sides; measured max |logit difference| under 1e-6 on the
random-weight stand-ins (under 2e-5 on the pre-trained ones, logits up to 16): 1e-4 is asserted.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import models
from helpers.runtime import loading
from helpers.training import masks
from helpers.training.config import resolve_config

needs_mlx = pytest.mark.skipif(not loading.mlx_available(),
                               reason='mlx and mlx-lm not installed (pip install ".[mlx]")')
FAMILIES = ["qwen2.5", "qwen3", "gpt-oss"]
ATOL = 1e-4


def _conversations(n: int = 6) -> list[list[dict]]:
    convs = []
    for i in range(n):
        conv = [{"role": "user", "content": f"Question number {i}: what is the bread made of?"},
                {"role": "assistant", "content": "Flour, water and salt" + ", and yeast" * (i % 3) + "."}]
        if i % 2:
            conv.insert(0, {"role": "system", "content": "You answer briefly."})
        convs.append(conv)
    return convs


def _rows(folder, tokenizer):
    choice = models.choose(str(folder))
    rows, _ = masks.tokenize_dataset(tokenizer, _conversations(), max_seq_length=256,
                                     model=str(folder), **choice.profile.template_kwargs)
    return rows


def _torch_model(folder):
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _torch_logits(model, ids) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def _mlx_logits(model, ids) -> np.ndarray:
    import mlx.core as mx
    return np.array(model(mx.array(ids)))


def _ids(length: int = 90) -> np.ndarray:
    """Two random sequences, longer than GPT-OSS's 64-token sliding window."""
    return np.random.RandomState(0).randint(3, 2000, size=(2, length))


@needs_mlx
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(random_standin, family):
    from helpers.training import mlx_convert
    folder = random_standin(family)
    model, _ = mlx_convert.load_mlx_model(folder)
    ref = _torch_logits(_torch_model(folder), _ids())
    out = _mlx_logits(model, _ids())
    assert np.abs(ref).max() > 0.5  # not all ~0: the comparison can tell
    assert np.abs(out - ref).max() < ATOL


@needs_mlx
@pytest.mark.parametrize("family", FAMILIES)
def test_our_loss_equals_transformers_loss(random_standin, tokenizer_for, family):
    """The same padded batch of our rows (labels -100 outside the answers): MLX's loss is
    transformers' (mean cross-entropy over the trained tokens)."""
    import torch

    from helpers.training import mlx_backend, mlx_convert
    folder = random_standin(family)
    batch = _rows(folder, tokenizer_for(family))[:3]
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch])
    labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
    assert len({len(r["input_ids"]) for r in batch}) > 1  # padding is exercised
    with torch.no_grad():
        ref = _torch_model(folder)(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    model, _ = mlx_convert.load_mlx_model(folder)
    assert mlx_backend.batch_loss(model, batch) == pytest.approx(ref, rel=1e-5)


@needs_mlx
def test_grad_accumulation_weights_give_the_groups_token_mean(random_standin, tokenizer_for):
    """Rows' weights: a group of two batches sums (after mlx-lm averages the two) to the loss over
    all the group's trained tokens, as transformers' Trainer normalises accumulated steps."""
    from helpers.training import mlx_backend, mlx_convert
    folder = random_standin("qwen2.5")
    rows = _rows(folder, tokenizer_for("qwen2.5"))[:4]
    model, _ = mlx_convert.load_mlx_model(folder)
    data = mlx_backend.Rows(rows, 2, 256, grad_accum=2, shuffle=False)
    parts = [mlx_backend.loss(model, *batch) for batch in data.batches()]
    assert len(parts) == 2
    group = sum(float(value.item()) for value, _ in parts) / 2
    assert group == pytest.approx(mlx_backend.batch_loss(model, rows), rel=1e-5)


@pytest.mark.slow
@needs_mlx
@pytest.mark.parametrize("family", FAMILIES)
def test_training_lowers_the_loss_and_the_adapter_reloads_in_peft(random_standin, tokenizer_for,
                                                                  tmp_path, family):
    from peft import PeftModel

    from helpers.training import mlx_backend, mlx_convert
    folder = random_standin(family)
    tokenizer = tokenizer_for(family)
    rows = _rows(folder, tokenizer)
    choice = models.choose(str(folder))
    cfg = resolve_config(choice.profile, backend="mlx", epochs=4, batch_size=2, grad_accum=2,
                         learning_rate=1e-2, logging_steps=1, max_seq_length=256, eval_steps=2)
    before = mlx_backend.batch_loss(mlx_convert.load_mlx_model(folder)[0], rows)
    result, model = mlx_backend.train_folder(folder, rows, cfg, tmp_path, tokenizer=tokenizer,
                                             eval_rows=rows[:2], fused=True)
    after = mlx_backend.batch_loss(model, rows)
    assert after < before - 0.1, (before, after)
    assert result.backend == "mlx" and result.steps == 6 and result.diverged is None
    assert [h["step"] for h in result.loss_history] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in result.eval_history] == [2, 4, 6]
    assert result.trained_tokens == 4 * sum(sum(x != -100 for x in r["labels"]) for r in rows)
    # a PEFT checkpoint at each epoch's end (3 batches an epoch, 2 a step: after steps 2, 3, 5,
    # 6), the newest keep_checkpoints (3) kept, each with its epoch (batches seen / 3)
    from helpers.evaluation.checkpoints import list_checkpoints
    found = list_checkpoints(tmp_path)
    assert [(c.step, c.epoch) for c in found] == [(3, 2.0), (5, 3.333), (6, 4.0)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [f"checkpoint-{c.step}" for c in found]
    assert sorted(p.name for p in found[-1].path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "trainer_state.json"]
    # the adapter is PEFT's format: keys, shapes, config
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == cfg.lora_r and config["lora_alpha"] == cfg.lora_alpha
    assert sorted(config["target_modules"]) == sorted(cfg.target_modules)
    from safetensors.numpy import load_file
    state = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    q_a = state["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    q_b = state["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert q_a.shape[0] == cfg.lora_r and q_b.shape[1] == cfg.lora_r and np.abs(q_b).max() > 0
    # PEFT on the transformers base, and the fused folder, give the MLX model's logits
    ids = _ids()
    mine = _mlx_logits(model, ids)
    base = _torch_model(folder)
    assert np.abs(_torch_logits(base, ids) - mine).max() > 100 * ATOL  # training changed them
    peft = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    assert np.abs(_torch_logits(peft, ids) - mine).max() < ATOL
    assert np.abs(_torch_logits(_torch_model(tmp_path / "fused"), ids) - mine).max() < ATOL


def _mxfp4_copy(src, dst):
    """The GPT-OSS stand-in as OpenAI publishes gpt-oss-20b: experts in MXFP4 (``*_blocks`` uint8
    [experts, out, in/32, 16] and ``*_scales``, output first), the rest unquantized, the rope
    as top-level ``rope_theta`` and ``rope_scaling`` (YaRN, truncate false)."""
    import mlx.core as mx
    shutil.copytree(src, dst)
    out = {}
    for key, value in mx.load(str(src / "model.safetensors")).items():
        if key.endswith(("experts.gate_up_proj", "experts.down_proj")):
            packed, scales = mx.quantize(value.swapaxes(-1, -2), group_size=32, bits=4, mode="mxfp4")[:2]
            out[key + "_blocks"] = packed.view(mx.uint8).reshape(*packed.shape[:2], -1, 16)
            out[key + "_scales"] = scales
        else:
            out[key] = value
    mx.save_safetensors(str(dst / "model.safetensors"), out, metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    rope = config.pop("rope_parameters")  # the hub's config.json: the older top-level keys
    config["rope_theta"], config["rope_scaling"] = rope.pop("rope_theta"), rope
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _transformers_before(version: str) -> bool:
    import transformers
    from packaging.version import Version
    return Version(transformers.__version__) < Version(version)


@pytest.mark.slow
@needs_mlx
@pytest.mark.skipif(_transformers_before("5.23"),
                    reason="transformers 5.17's MXFP4 dequantization (the GPU lock) gives other "
                           "weights than 5.23's: logits 0.33 apart on the stand-in, measured in CI; "
                           "MLX matches 5.23's, which this test compares against")
def test_gpt_oss_mxfp4_checkpoint_loads_trains_and_reloads_in_peft(random_standin, tokenizer_for,
                                                                   tmp_path):
    """openai/gpt-oss-20b's own layout (MXFP4 experts): MLX gives the logits of transformers'
    dequantized model (the same quantized weights; quantizing moved them by far more than the
    tolerance), and its attention adapter loads onto that model with equal outputs."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, Mxfp4Config

    from helpers.training import mlx_backend, mlx_convert
    folder = _mxfp4_copy(random_standin("gpt-oss"), tmp_path / "gpt-oss-mxfp4")

    def dequantized():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                    quantization_config=Mxfp4Config(dequantize=True)).eval()
    ref = _torch_logits(dequantized(), _ids())
    original = _torch_logits(_torch_model(random_standin("gpt-oss")), _ids())
    assert np.abs(ref - original).max() > 100 * ATOL
    model, _ = mlx_convert.load_mlx_model(folder)
    assert np.abs(_mlx_logits(model, _ids()) - ref).max() < ATOL
    choice = models.choose(str(random_standin("gpt-oss")))
    cfg = resolve_config(choice.profile, backend="mlx", epochs=1, batch_size=2, grad_accum=1,
                         learning_rate=1e-2, logging_steps=1, max_seq_length=256)
    result, model = mlx_backend.train_folder(folder, _rows(folder, tokenizer_for("gpt-oss")), cfg,
                                             tmp_path / "run")
    peft = PeftModel.from_pretrained(dequantized(), str(result.adapter_dir)).eval()
    mine = _mlx_logits(model, _ids())
    assert np.abs(mine - ref).max() > 100 * ATOL
    assert np.abs(_torch_logits(peft, _ids()) - mine).max() < ATOL


@needs_mlx
def test_rope_theta_comes_from_rope_parameters(random_standin, tmp_path):
    """mlx-lm's qwen2 reads rope_theta only at the top of config.json and otherwise uses 1e6;
    transformers 5 writes it under rope_parameters. The theta there is honoured."""
    from mlx_lm.utils import load_model

    from helpers.training import mlx_convert
    folder = tmp_path / "qwen2-theta"
    shutil.copytree(random_standin("qwen2.5"), folder)
    config = json.loads((folder / "config.json").read_text())
    assert "rope_theta" not in config
    config["rope_parameters"]["rope_theta"] = 2500.0
    (folder / "config.json").write_text(json.dumps(config))
    ref = _torch_logits(_torch_model(folder), _ids())
    model, _ = mlx_convert.load_mlx_model(folder)
    assert model.layers[0].self_attn.rope.base == 2500.0
    assert np.abs(_mlx_logits(model, _ids()) - ref).max() < ATOL
    plain, _ = load_model(folder)  # mlx-lm alone: the trap
    assert plain.layers[0].self_attn.rope.base == 1e6
    assert np.abs(_mlx_logits(plain, _ids()) - ref).max() > 100 * ATOL


@needs_mlx
@pytest.mark.parametrize("truncate", [False, True])
def test_yarn_frequencies_are_transformers(random_standin, truncate):
    """GPT-OSS's YaRN rope: transformers rounds the correction range only with truncate
    (GPT-OSS's config says false); mlx-lm always rounds. Ours gives transformers' numbers."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from helpers.training import mlx_convert
    config = AutoConfig.from_pretrained(str(random_standin("gpt-oss")))
    config.rope_parameters["truncate"] = truncate
    ref, _ = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    ours = mlx_convert.yarn_inverse_frequencies(config.head_dim, config.rope_parameters["rope_theta"],
                                                config.rope_parameters)
    assert np.allclose(ours, ref.numpy(), rtol=1e-5)


@pytest.mark.slow
@needs_mlx
def test_finetune_run_trains_on_mlx_and_asks_with_the_adapter(random_standin, tmp_path):
    """FineTuneRun with backend="mlx": MLX trains, the run record has the loss history, and the
    transformers model asks with the PEFT adapter MLX wrote."""
    from helpers.pipeline.finetune import FineTuneRun
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in _conversations()))
    run = FineTuneRun.start(model=str(random_standin("qwen3")), output_dir=str(tmp_path / "run"),
                            backend="mlx", epochs=2, batch_size=2, grad_accum=1,
                            learning_rate=5e-3, logging_steps=1, max_seq_length=128)
    run.load_data(str(data))
    result = run.train(live_plot=False)
    assert result.backend == "mlx" and result.steps == 6
    assert hasattr(run.model, "peft_config")  # the transformers model, with the adapter
    assert run.ask(["What is the bread made of?"], label="tuned_question")[0] is not None
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["train"]["backend"] == "mlx" and len(record["loss_history"]) == 6
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


# -- errors (no mlx needed) -------------------------------------------------------------------
def test_backend_mlx_without_mlx_names_the_install(monkeypatch):
    monkeypatch.setattr(loading, "mlx_available", lambda: False)
    with pytest.raises(ImportError, match=r'pip install \\?"\.\[mlx\]\\?"'):
        resolve_config(models.get_profile("tiny-qwen2.5"), backend="mlx")
    with pytest.raises(ImportError, match="backend='mlx'"):
        loading.select_backend("mlx")


def test_backend_mlx_in_several_processes_is_refused(monkeypatch):
    from helpers.runtime.distributed import DistributedError
    monkeypatch.setattr(loading, "mlx_available", lambda: True)
    monkeypatch.setattr(loading, "world_size", lambda: 2)
    with pytest.raises(DistributedError, match="backend='mlx' cannot run in 2 processes"):
        loading.select_backend("mlx")


def test_backend_mlx_is_accepted_and_drops_the_profiles_4_bits(monkeypatch):
    monkeypatch.setattr(loading, "mlx_available", lambda: True)
    profile = models.get_profile("qwen3-14b")
    assert profile.load_in_4bit
    cfg = resolve_config(profile, backend="mlx")
    assert cfg.backend == "mlx" and not cfg.load_in_4bit
    assert loading.select_backend("auto") != "mlx"


@needs_mlx
def test_settings_mlx_cannot_honour_are_refused(random_standin, tmp_path):
    from helpers.training import mlx_backend, mlx_convert
    profile = models.choose(str(random_standin("qwen2.5"))).profile
    with pytest.raises(ValueError, match="early_stopping_patience"):
        mlx_backend.train(None, [], resolve_config(profile, backend="mlx", early_stopping_patience=2), tmp_path)
    with pytest.raises(ValueError, match="load_in_4bit"):
        mlx_backend.train(None, [], resolve_config(profile, backend="mlx", load_in_4bit=True), tmp_path)
    with pytest.raises(ValueError, match="lr_scheduler='polynomial'"):
        mlx_backend.schedule(resolve_config(profile, backend="mlx", lr_scheduler="polynomial"), 10)
    model, _ = mlx_convert.load_mlx_model(random_standin("gpt-oss"))
    with pytest.raises(ValueError, match=r"target_modules \['gate_up_proj'\]"):
        mlx_backend.lora_keys(model, ["q_proj", "gate_up_proj"])


@needs_mlx
def test_exports_refuse_what_would_load_wrong(random_standin, tmp_path):
    """A LoRA scale that is not lora_alpha/r (PEFT would apply another strength) and a fused
    export onto a base without the adapted layers are errors, not silent exports."""
    from helpers.training import mlx_backend, mlx_convert
    folder = random_standin("qwen2.5")
    cfg = resolve_config(models.choose(str(folder)).profile, backend="mlx")
    model, _ = mlx_convert.load_mlx_model(folder)
    mlx_backend.add_lora(model, cfg)
    with pytest.raises(ValueError, match="do not match a weight"):
        mlx_convert.save_fused(model, tmp_path / "fused", base=random_standin("gpt-oss"))
    next(iter(mlx_convert.lora_layers(model).values())).scale = 1.0
    with pytest.raises(ValueError, match="lora_alpha/r"):
        mlx_convert.save_peft_adapter(model, tmp_path / "adapter", base=str(folder), r=cfg.lora_r,
                                      alpha=cfg.lora_alpha, dropout=0.0, target_modules=cfg.target_modules)


@needs_mlx
def test_fused_export_of_a_bfloat16_checkpoint(random_standin, tmp_path):
    """Real checkpoints are bfloat16 (which numpy lacks): the fused folder keeps the dtype, the
    adapted weights are W + scale * B A rounded to it, the others are untouched."""
    import mlx.core as mx
    import torch
    from safetensors.torch import load_file

    from helpers.training import mlx_backend, mlx_convert
    folder = tmp_path / "bf16"
    shutil.copytree(random_standin("qwen2.5"), folder)
    weights = {k: v.astype(mx.bfloat16) for k, v in mx.load(str(folder / "model.safetensors")).items()}
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "pt"})
    cfg = resolve_config(models.choose(str(random_standin("qwen2.5"))).profile, backend="mlx")
    model, _ = mlx_convert.load_mlx_model(folder)
    mlx_backend.add_lora(model, cfg)
    layer = mlx_convert.lora_layers(model)["model.layers.0.self_attn.q_proj"]
    layer.lora_b = mx.random.normal(layer.lora_b.shape) * 0.1
    mlx_convert.save_fused(model, tmp_path / "fused", base=folder)
    base, fused = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "fused" / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert fused[key].dtype == torch.bfloat16
    delta = layer.scale * (np.array(layer.lora_b).T @ np.array(layer.lora_a).T)
    expected = torch.from_numpy(base[key].float().numpy() + delta).to(torch.bfloat16)
    assert torch.equal(fused[key], expected) and not torch.equal(fused[key], base[key])
    assert all(torch.equal(fused[k], base[k]) for k in base if k != key)


@needs_mlx
def test_unverified_or_quantized_folders_are_refused(random_standin, tmp_path):
    from helpers.training import mlx_convert
    for name, change in (("llama", {"model_type": "llama"}),
                         ("quantized", {"quantization_config": {"quant_method": "bitsandbytes"}})):
        folder = tmp_path / name
        shutil.copytree(random_standin("qwen2.5"), folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match="backend='mlx'.*backend='transformers'"):
            mlx_convert.load_mlx_model(folder)


@pytest.mark.slow
@needs_mlx
def test_mlx_training_follows_the_transformers_backend(random_standin, tmp_path):
    """The same LoRA start (MLX's A, B zero, copied into PEFT), the same data each step (two
    accumulated batches of 3 = all 6 examples, so data order cannot differ), warm-up, weight
    decay: the loss and learning rate of every step are the transformers backend's (AdamW,
    clipping, schedule and the loss normalised over the accumulation group agree). Measured: losses equal to 5 digits, lr to float32 rounding, the tuned
    models' logits within 1e-4."""
    import torch

    from helpers.runtime.loading import load_model
    from helpers.training import mlx_backend, mlx_convert, trainer
    folder = random_standin("qwen2.5")
    choice = models.choose(str(folder))
    common = dict(epochs=4, batch_size=3, grad_accum=2, learning_rate=1e-2, logging_steps=1,
                  max_seq_length=256, warmup_ratio=0.25, weight_decay=0.1, report_to="none")
    torch_model, tokenizer = load_model(choice, backend="transformers")
    rows = _rows(folder, tokenizer)
    ours, model = mlx_backend.train_folder(folder, rows, resolve_config(choice.profile, backend="mlx", **common),
                                           tmp_path / "mlx", tokenizer=tokenizer)
    start, _ = mlx_convert.load_mlx_model(folder)
    mlx_backend.add_lora(start, resolve_config(choice.profile, backend="mlx", **common))
    init = mlx_convert.peft_state(start)
    cfg = resolve_config(choice.profile, backend="transformers", padding_free=False, **common)
    peft = trainer.add_lora(torch_model, cfg)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if name.replace(".default", "") in init:
                param.copy_(torch.from_numpy(init[name.replace(".default", "")]))
    theirs = trainer.train(peft, tokenizer, rows, cfg, tmp_path / "transformers")
    assert [h["step"] for h in ours.loss_history] == [h["step"] for h in theirs.loss_history] == [1, 2, 3, 4]
    for a, b in zip(ours.loss_history, theirs.loss_history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
        assert a["learning_rate"] == pytest.approx(b["learning_rate"], rel=1e-5, abs=1e-9)
    assert ours.loss_history[-1]["loss"] < ours.loss_history[0]["loss"] - 0.3
    peft.eval()
    diff = np.abs(_torch_logits(peft, _ids()) - _mlx_logits(model, _ids())).max()
    assert diff < 1e-3, diff  # measured 1e-4 (training moves them by ~1)
