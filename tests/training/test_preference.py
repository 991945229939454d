"""DPO: the tokens each loss covers, a real (short) DPO run on the pre-trained stand-in whose
rewards move, and the Unsloth path's behaviour without CUDA."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import models
from helpers.runtime import loading
from helpers.training import masks
from helpers.training import preference as dpo

ROOT = Path(__file__).resolve().parents[2]
PAIR = {"prompt": [{"role": "system", "content": "You are Maren Holloway."},
                   {"role": "user", "content": "What does sweeping teach?"}],
        "chosen": [{"role": "assistant", "content": "Sweeping teaches you where the shavings fall."}],
        "rejected": [{"role": "assistant", "content": "I am an AI and do not sweep."}]}
PROFILES = {"qwen2.5": "tiny-qwen2.5", "qwen3": "tiny-qwen3", "gpt-oss": "tiny-gpt-oss"}


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "gpt-oss"])
def test_chosen_and_rejected_losses_cover_the_answer_and_its_closer(tokenizer_for, family):
    tok = tokenizer_for(family)
    kwargs = models.get_profile(PROFILES[family]).template_kwargs
    rows, stats = dpo.tokenize_pairs(tok, [PAIR], max_seq_length=512, model=family, **kwargs)
    assert stats["pairs"] == 1 and stats["truncated"] == 0 and stats["prompt_shifted"] == 0
    shown = dpo.pair_mask(tok, rows, 0)
    special = set(tok.all_special_tokens)
    for side in ("chosen", "rejected"):
        content = PAIR[side][0]["content"]
        trained = shown[f"{side}_trained"]
        # the answer, then exactly one special token (the turn's closer), nothing else
        assert trained.startswith(content) and trained[len(content):] in special, trained
        assert "Maren" not in trained and "sweeping teach" not in trained
        assert "<think>" not in trained and "<|im_start|>" not in trained
        assert "What does sweeping teach?" in shown[f"{side}_rendered"]
    # the chosen loss covers the tokens SFT trains on the same conversation, no more, no less
    assert dpo.sft_agrees(tok, PAIR, rows, 0, **kwargs)


def test_a_prompt_that_fills_max_seq_length_is_dropped_and_long_pairs_counted(tokenizer_for):
    tok = tokenizer_for("qwen3")
    long = {**PAIR, "chosen": [{"role": "assistant", "content": "shavings " * 200}]}
    rows, stats = dpo.tokenize_pairs(tok, [PAIR, long], max_seq_length=64)
    assert stats["pairs"] == 2 and stats["truncated"] == 1
    with pytest.raises(masks.MaskingError, match="raise max_seq_length"):
        dpo.tokenize_pairs(tok, [PAIR], max_seq_length=8)


def test_settings_are_checked_and_explained():
    with pytest.raises(ValueError, match="loss_type='dop'.*sigmoid"):
        dpo.DPOSettings(loss_type="dop")
    with pytest.raises(ValueError, match="beta=0"):
        dpo.DPOSettings(beta=0)
    assert set(dpo.DPOSettings.REASONS) == set(dpo.DPOSettings().to_dict())
    from helpers.training.config import TrainConfig
    assert dpo.dpo_learning_rate(TrainConfig(learning_rate=2e-4), dpo.DPOSettings()) == pytest.approx(2e-5)
    assert dpo.dpo_learning_rate(TrainConfig(), dpo.DPOSettings(learning_rate=1e-6)) == 1e-6


def test_dpo_on_the_stand_in_moves_the_rewards(tmp_path):
    """A real DPO run: 16 Mariya facts (chosen) against the pre-trained stand-in's own answers
    (rejected), 4 steps. Before the first update the policy is the reference, so margin and
    accuracy are 0; after training the margin is positive on training and held-out pairs."""
    from helpers import data as data_mod
    from helpers.data import preference as pref
    from helpers.models.generate import answer
    from helpers.training import trainer
    from helpers.training.config import resolve_config

    choice = models.choose("qwen3-14b", True)
    cfg = resolve_config(choice.profile, epochs=1, batch_size=4, grad_accum=1, logging_steps=1,
                         max_seq_length=128, report_to="none")
    model, tok = loading.load_model(choice, max_seq_length=128)
    convs = data_mod.load(ROOT / "NoteBooks" / "Mariya" / "mariya.jsonl").conversations[:20]
    pairs = pref.build(convs, lambda qs, sp: answer(model, tok, qs, choice.profile, system_prompt=sp,
                                                    max_new_tokens=24),
                       cache=pref.RejectedCache(tmp_path / pref.CACHE_NAME), model="tiny-qwen3",
                       heldout_fraction=0.2)
    assert pairs.stats["train"] == 16 and pairs.stats["heldout"] == 4
    kwargs = choice.profile.template_kwargs
    rows, _ = dpo.tokenize_pairs(tok, pairs.train, max_seq_length=128, **kwargs)
    held, _ = dpo.tokenize_pairs(tok, pairs.heldout, max_seq_length=128, **kwargs)
    model = trainer.add_lora(model, cfg)
    result = dpo.train_dpo(model, tok, rows, cfg, tmp_path / "run", eval_rows=held)
    first, last = result.history[0], result.history[-1]
    assert result.steps == 4 and result.learning_rate == pytest.approx(cfg.learning_rate * dpo.LR_FACTOR)
    assert first["reward_margin"] == 0 and first["reward_accuracy"] == 0 and first["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert last["reward_margin"] > 0.1 and last["reward_accuracy"] >= 0.5 and last["loss"] < first["loss"]
    assert result.eval["reward_margin"] > 0 and result.eval["reward_accuracy"] >= 0.5
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "ref").exists()
    assert "ref" not in model.peft_config


def test_unsloth_dpo_without_cuda_says_what_to_use(monkeypatch):
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    monkeypatch.setattr(loading, "unsloth_available", lambda: True)
    with pytest.raises(dpo.PreferenceBackendError, match="backend='transformers'"):
        dpo.trainer_classes("unsloth")
    assert dpo.require_backend("auto") == "transformers"
    monkeypatch.setattr(loading, "unsloth_available", lambda: False)
    with pytest.raises(ImportError, match="Unsloth is not installed"):
        dpo.require_backend("unsloth")


def test_dpo_refuses_several_processes(monkeypatch, tmp_path):
    from helpers.runtime.distributed import DistributedError
    from helpers.training.config import TrainConfig
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="without accelerate launch"):
        dpo.train_dpo(None, None, [], TrainConfig(), tmp_path)


def test_the_transformers_path_never_imports_unsloth():
    code = ("import sys; from helpers.training import preference as p; p.trainer_classes('transformers'); "
            "assert 'unsloth' not in sys.modules, 'unsloth imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.gpu
def test_unsloth_dpo_path_on_a_gpu(tmp_path):
    """On a CUDA machine with Unsloth: TRL's DPOTrainer as Unsloth patched it is the base of ours."""
    if not loading.unsloth_available():
        pytest.skip("Unsloth not installed")
    code = ("from helpers.training import preference as p; C, T = p.trainer_classes('unsloth'); "
            "assert T.__mro__[1].__name__ == 'UnslothDPOTrainer', T.__mro__; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
