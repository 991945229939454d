"""8-bit loading (issue 14, part 5), checked on the CPU with fakes.

The fakes stand in for the library calls ``helpers.runtime.loading.load_model`` makes; what the
libraries do with 8 bits was read in their source (unsloth 2026.10.9 models/loader.py,
models/vision.py, models/loader_utils.py; unsloth_zoo 2026.10.9
temporary_patches/moe_utils_bnb4bit.py; transformers 5.17 and 5.23
integrations/bitsandbytes.py, quantizers/quantizer_bnb_8bit.py), and the tests that can read
the installed unsloth check the parts we rely on.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging

import pytest

from helpers import models
from helpers.models import precision, sizing
from helpers.pipeline import finetune
from helpers.pipeline.finetune import FineTuneRun
from helpers.runtime import loading, memory
from helpers.training import autoconfig, fallback, trainer
from helpers.training.autoconfig import auto_configure
from helpers.training.config import TrainConfig, resolve_config
from tests.models.test_gpu_loading import (  # noqa: F401  (fixtures)
    _unsloth_models_dir,
    fake_transformers,
    gpu,
    install_fake_unsloth,
)

REAL = [p for p in models.REGISTRY.values() if not p.is_standin]


# -- settings ----------------------------------------------------------------------------------
def test_4_and_8_bits_together_is_an_error_naming_both_and_the_fix():
    profile = models.get_profile("qwen3-14b")
    for make in (lambda: resolve_config(profile, load_in_4bit=True, load_in_8bit=True),
                 lambda: TrainConfig(load_in_4bit=True, load_in_8bit=True),
                 lambda: dataclasses.replace(resolve_config(profile), load_in_8bit=True)):
        with pytest.raises(ValueError) as e:
            make()
        msg = str(e.value)
        assert "load_in_4bit=True" in msg and "load_in_8bit=True" in msg
        assert "load_in_4bit=False" in msg and "--load-in-8bit" in msg


def test_8_bits_asked_turns_off_the_profile_default_4_bits():
    profile = models.get_profile("qwen3-14b")            # 4 bits by default
    assert resolve_config(profile).bits == 4
    cfg = resolve_config(profile, load_in_8bit=True)
    assert (cfg.load_in_4bit, cfg.load_in_8bit, cfg.bits) == (False, True, 8)
    assert resolve_config(profile, load_in_4bit=False).bits == 16
    assert resolve_config(profile, load_in_8bit=False).bits == 4
    assert cfg.to_dict()["load_in_8bit"] is True


def test_resume_fingerprint_of_older_checkpoints_is_unchanged_at_16_and_4_bits():
    profile = models.get_profile("qwen3-14b")
    rows = [{"input_ids": [1, 2], "labels": [1, 2]}]
    assert "load_in_8bit" not in trainer._fingerprint(resolve_config(profile), rows)["settings"]
    eight = trainer._fingerprint(resolve_config(profile, load_in_8bit=True), rows)["settings"]
    assert eight["load_in_8bit"] is True and eight["load_in_4bit"] is False


def test_cli_flag():
    base = ["--data", "d.jsonl", "--output", "o"]
    assert finetune.parser().parse_args(base).load_in_8bit is None
    assert finetune.parser().parse_args(base + ["--load-in-8bit"]).load_in_8bit is True


# -- loading -----------------------------------------------------------------------------------
def test_transformers_quantizes_the_16_bit_repo_in_8_bits(fake_transformers):
    from transformers import BitsAndBytesConfig
    choice = models.choose("qwen3-14b", smoke=False)
    model, _ = loading.load_model(choice, backend="transformers", load_in_8bit=True)
    source, kwargs = fake_transformers[-1]
    assert source == "Qwen/Qwen3-14B"                     # the 16-bit repo, not the bnb-4bit one
    q = kwargs["quantization_config"]
    assert isinstance(q, BitsAndBytesConfig) and q.load_in_8bit and not q.load_in_4bit
    assert kwargs["device_map"] == {"": 0}
    assert model._finetuning_bits == 8 and model._finetuning_source == "Qwen/Qwen3-14B"
    loading.load_model(choice, backend="transformers", load_in_4bit=False)
    assert "quantization_config" not in fake_transformers[-1][1]
    with pytest.raises(ValueError, match="load_in_4bit=True and load_in_8bit=True"):
        loading.load_model(choice, backend="transformers", load_in_4bit=True, load_in_8bit=True)


def test_unsloth_gets_load_in_8bit_with_load_in_4bit_off(gpu):
    calls = install_fake_unsloth(gpu)
    choice = models.choose("qwen3-14b", smoke=False)
    model, _ = loading.load_model(choice, backend="unsloth", load_in_8bit=True)
    call = calls[-1]
    assert call["model_name"] == "Qwen/Qwen3-14B"
    assert call["load_in_4bit"] is False and call["load_in_8bit"] is True
    assert model._finetuning_bits == 8
    loading.load_model(choice, backend="unsloth")        # the profile's 4 bits: no 8-bit keyword
    assert calls[-1]["load_in_4bit"] is True and "load_in_8bit" not in calls[-1]


def _unsloth_source(name: str) -> str:
    return (_unsloth_models_dir() / name).read_text()


def _function(source: str, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.FunctionDef) and n.name == name)


@pytest.mark.skipif(_unsloth_models_dir() is None, reason="unsloth is not installed")
def test_installed_unsloth_takes_load_in_8bit_as_we_pass_it():
    """FastLanguageModel.from_pretrained has ``load_in_8bit``; its ``load_in_4bit`` defaults to
    True and both together raise, so we pass ``load_in_4bit=False``; FastBaseModel quantizes
    with BitsAndBytesConfig(load_in_8bit=True)."""
    loader = _unsloth_source("loader.py")
    cls = next(n for n in ast.parse(loader).body
               if isinstance(n, ast.ClassDef) and n.name == "FastLanguageModel")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "from_pretrained")
    args = [a.arg for a in fn.args.args]
    defaults = dict(zip(args[len(args) - len(fn.args.defaults):], fn.args.defaults))
    assert defaults["load_in_4bit"].value is True and defaults["load_in_8bit"].value is False
    assert "set both `load_in_4bit = False` and `load_in_8bit = True`" in loader
    vision = _unsloth_source("vision.py")
    assert "elif load_in_8bit:\n            bnb_config = BitsAndBytesConfig(\n                load_in_8bit = True," in vision


@pytest.mark.skipif(_unsloth_models_dir() is None, reason="unsloth is not installed")
def test_installed_unsloth_ignores_8_bits_for_gpt_oss():
    """Why GPT-OSS is refused in 8 bits on Unsloth too: its loader keeps the checkpoint's own
    quantization for gpt-oss whenever 4 bits is off."""
    fn = _function(_unsloth_source("loader_utils.py"), "gpt_oss_keeps_checkpoint_quantization")
    scope: dict = {}
    exec(compile(ast.Module([fn], []), "loader_utils", "exec"), scope)
    keeps = scope["gpt_oss_keeps_checkpoint_quantization"]
    assert keeps("openai/gpt-oss-20b", object(), load_in_4bit=False)      # the 8-bit request
    assert not keeps("Qwen/Qwen3-14B", object(), load_in_4bit=False)


@pytest.mark.parametrize("backend", ["transformers", "unsloth"])
def test_gpt_oss_in_8_bits_is_refused_before_loading(fake_transformers, gpu, backend):
    calls = install_fake_unsloth(gpu)
    choice = models.choose("gpt-oss-20b", smoke=False)
    with pytest.raises(models.UnsupportedLoadError) as e:
        loading.load_model(choice, backend=backend, load_in_8bit=True)
    msg = str(e.value)
    assert "load_in_8bit=True" in msg and "nn.Linear" in msg and "16 bits" in msg
    assert "load_in_4bit=True" in msg and "load_in_8bit=False" in msg
    assert fake_transformers == [] and calls == []
    p = choice.profile
    assert p.vram_gb(backend=backend, bits=8) == p.vram_gb_16bit   # no saving to plan with


def test_qwen3_moe_in_8_bits_loads_but_saves_little(fake_transformers):
    """Correct weights (experts are 3-D parameters bitsandbytes leaves in bf16, on both backends:
    unsloth_zoo quantizes experts for 4 bits only), so it is allowed; the estimate says 65 GB."""
    choice = models.choose("qwen3-30b-a3b", smoke=False)
    loading.load_model(choice, backend="transformers", load_in_8bit=True)
    assert fake_transformers[-1][0] == "Qwen/Qwen3-30B-A3B"
    p = choice.profile
    for backend in (None, "unsloth", "transformers"):
        assert p.vram_gb(backend=backend, bits=8) == 65.0 < p.vram_gb_16bit


def test_without_cuda_8_bits_is_ignored_with_a_note(fake_transformers, gpu, caplog):
    gpu.setattr(models, "cuda_available", lambda: False)
    choice = models.choose("qwen2.5-0.5b", smoke=False)
    if choice.profile.needs_gpu:
        pytest.skip("this machine is too small for the 0.5B model on its CPU")
    with caplog.at_level(logging.INFO, logger="helpers.runtime.loading"):
        model, _ = loading.load_model(choice, backend="transformers", load_in_8bit=True)
    assert "quantization_config" not in fake_transformers[-1][1]
    assert model._finetuning_bits == 32
    assert "8-bit loading needs a CUDA GPU" in caplog.text


def test_run_json_records_the_bits(fake_transformers, tmp_path):
    run = FineTuneRun.start(model="qwen3-14b", smoke=False, output_dir=str(tmp_path / "run"),
                            backend="transformers", load_in_8bit=True)
    assert run.cfg.bits == 8
    run.load_model()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["model"]["bits"] == 8 and record["model"]["source"] == "Qwen/Qwen3-14B"
    assert record["train_config"]["load_in_8bit"] is True
    assert record["train_config"]["load_in_4bit"] is False


# -- memory estimates --------------------------------------------------------------------------
@pytest.mark.parametrize("profile", REAL, ids=lambda p: p.name)
def test_estimates_are_ordered_4_8_16(profile):
    if profile.no_8bit:
        assert profile.vram_gb(bits=8) == profile.vram_gb_16bit
        return
    for backend in (None, "unsloth", "transformers"):
        four = profile.vram_gb(True, backend)
        eight = profile.vram_gb(backend=backend, bits=8)
        assert four <= eight < profile.vram_gb(False, backend)
        if backend != "transformers" or profile.vram_gb_4bit_transformers is None:
            assert four < eight


def test_8_bit_estimate_rules():
    p = models.get_profile("qwen3-14b")
    assert p.vram_gb(bits=8) == sizing.training_memory_gb(p.params, 8) == 21.1
    assert p.vram_gb(bits=16) == p.vram_gb(False) and p.vram_gb(bits=4) == p.vram_gb(True)
    unknown = dataclasses.replace(p, params=None)           # a third of the way from 4 to 16
    assert unknown.vram_gb(bits=8) == round(13.5 + (34.0 - 13.5) / 3, 1)
    sized = models.get_profile("qwen2.5-1.5b")               # the formula is that rule too
    assert abs(sized.vram_gb(bits=8) - (sized.vram_gb_4bit + (sized.vram_gb_16bit - sized.vram_gb_4bit) / 3)) < 0.1
    stand_in = models.get_profile("tiny-qwen3")
    assert stand_in.vram_gb(bits=8) == 0.1
    with pytest.raises(ValueError, match="bits=12"):
        p.vram_gb(bits=12)
    assert precision.bits(False, True) == 8 and precision.bits(None, None) == 16


def test_preload_check_reports_the_bits():
    v = memory.preload_check("qwen3-14b", load_in_8bit=True, free_gb=30.0)
    assert v.fits and v.bits == 8 and v.needed_gb == 21.1 and "(8-bit" in v.message
    v = memory.preload_check("qwen3-14b", False, free_gb=30.0)     # 16-bit, 34 GiB
    assert not v.fits and v.bits == 16 and "load_in_8bit=True (about 21.1 GiB)" in v.message
    v = memory.preload_check("qwen3-14b", load_in_8bit=True, free_gb=15.0)
    assert not v.fits and "load_in_4bit=True, load_in_8bit=False (about 13.5 GiB)" in v.message
    assert memory.preload_check("qwen3-14b", free_gb=30.0).bits == 4
    assert "load_in_8bit" not in memory.preload_check("gpt-oss-20b", False, free_gb=30.0).message


# -- auto-configuration ------------------------------------------------------------------------
def test_autoconfig_picks_8_bits_between_16_and_4():
    """qwen3-14b: 16 bits ~34 GB, 8 bits ~21.1 GB, 4 bits ~13.5 GB."""
    assert auto_configure("qwen3-14b", free_gb=40.0).bits == 16
    c = auto_configure("qwen3-14b", free_gb=30.0)       # 21.1 x 1.25 = 26.4 fits in 30
    assert c.bits == 8 and c.load_in_8bit and not c.load_in_4bit
    assert "8-bit" in c.reasons[0] and "~21.1 GB" in c.reasons[0] and "30.0 GB" in c.reasons[0]
    assert c.gradient_checkpointing and str(c).startswith("8-bit,")
    cfg = resolve_config(models.get_profile("qwen3-14b"), **c.overrides())
    assert cfg.bits == 8
    # 8 bits would fit but leave no room (23.5 < 26.4): 4 bits at a bigger batch instead
    assert auto_configure("qwen3-14b", free_gb=23.5).bits == 4
    # never where the model is refused in 8 bits
    assert auto_configure("gpt-oss-20b", free_gb=40.0, backend="unsloth").bits == 4
    assert auto_configure("gpt-oss-20b", free_gb=30.0, backend="transformers").bits == 16


def test_explicit_precision_wins_over_autoconfig():
    def settings(free, **explicit):
        auto = auto_configure("qwen3-14b", free_gb=free)
        return auto, autoconfig._with_explicit(auto, explicit)

    auto, s = settings(30.0, load_in_4bit=True)          # auto chose 8
    assert (s["load_in_4bit"], s["load_in_8bit"]) == (True, False)
    assert "load_in_8bit=False: load_in_4bit=True was given" in str(auto)
    auto, s = settings(23.5, load_in_8bit=True)          # auto chose 4
    assert (s["load_in_4bit"], s["load_in_8bit"]) == (False, True)
    assert resolve_config(models.get_profile("qwen3-14b"), **s).bits == 8
    _, s = settings(23.5, load_in_4bit=False)            # "not 4 bits" where 4 was chosen: 16
    assert (s["load_in_4bit"], s["load_in_8bit"]) == (False, False)
    _, s = settings(30.0, load_in_8bit=None, load_in_4bit=None)
    assert (s["load_in_4bit"], s["load_in_8bit"]) == (False, True)


# -- the out-of-memory ladder ------------------------------------------------------------------
def test_ladder_of_an_8_bit_run_steps_to_4_bits():
    choice = models.choose("qwen2.5-3b", smoke=False)
    cfg = resolve_config(choice.profile, load_in_8bit=True, backend="unsloth")
    rungs = fallback.ladder(choice, cfg)
    assert rungs[0].describe().endswith("8-bit")
    last = rungs[-1]
    assert last.kind == "load_in_4bit" and last.cfg.bits == 4
    assert last.parameters["load_in_4bit"] is True and last.parameters["load_in_8bit"] is False
    assert "load_in_8bit True -> False" in last.reason and last.describe().endswith("4-bit")
    assert last.settings()["load_in_8bit"] is False
    # a 16-bit run still goes straight to 4 bits
    kinds = [r.kind for r in fallback.ladder(choice, resolve_config(choice.profile, backend="unsloth"))]
    assert kinds.count("load_in_4bit") == 1 and "load_in_8bit" not in kinds


# -- export ------------------------------------------------------------------------------------
def test_an_8_bit_run_merges_into_the_16_bit_base(monkeypatch, tmp_path):
    """The adapter of an 8-bit run was trained on the 16-bit repo quantized while loading, so
    the export's base is that repo; a bitsandbytes-8-bit checkpoint as the base is refused."""
    import transformers

    from helpers import export
    choice = models.choose("qwen3-14b", smoke=False)
    assert choice.source(False, load_in_8bit=True) == export._base_16bit_source(choice) == "Qwen/Qwen3-14B"
    cfg = {"model_type": "qwen3", "quantization_config": {"quant_method": "bitsandbytes",
                                                          "load_in_8bit": True}}
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda *a, **k: type("C", (), {"to_dict": lambda self: dict(cfg)})())
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    with pytest.raises(ValueError, match="unquantized base model"):
        export.export_merged("someone/Qwen3-14B-8bit", adapter, tmp_path / "merged")
