"""GPU memory helpers and the out-of-memory fallback ladder, on a CPU: out-of-memory is simulated
by attempt callables that raise it at a chosen stage of a chosen rung (no model is trained)."""

import gc
import json
import weakref

import pytest
import torch

from helpers import models
from helpers.runtime import memory
from helpers.training import fallback
from helpers.training.config import resolve_config
from helpers.training.runrecord import RunRecord

CUDA = torch.cuda.is_available()


def setup(model="qwen3-32b", smoke=False, **overrides):
    # the ladder of a single-GPU Unsloth run (on this CPU machine "auto" would plan for
    # transformers, where the MoE fallback is heavier; see test_gpu_loading.py)
    overrides.setdefault("backend", "unsloth")
    choice = models.choose(model, smoke=smoke)
    return choice, resolve_config(choice.profile, **overrides)


def oom(kind="torch"):
    if kind == "torch":
        return torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.55 GiB "
            "of which 1.10 GiB is free.")
    return RuntimeError("CUDA out of memory")


def shape(rungs):
    return [(r.kind, r.choice.requested.name, r.choice.profile.name, r.cfg.max_seq_length,
             r.cfg.batch_size, r.cfg.grad_accum) for r in rungs]


# -- the ladder --------------------------------------------------------------------------------
def test_ladder_for_qwen3_32b_shortens_then_shrinks_batch_then_lighter_models():
    choice, cfg = setup(batch_size=2, grad_accum=4)
    rungs = fallback.ladder(choice, cfg)
    assert shape(rungs) == [
        ("asked", "qwen3-32b", "qwen3-32b", 1024, 2, 4),
        ("max_seq_length", "qwen3-32b", "qwen3-32b", 768, 2, 4),
        ("max_seq_length", "qwen3-32b", "qwen3-32b", 512, 2, 4),
        ("batch_size", "qwen3-32b", "qwen3-32b", 512, 1, 8),
        ("model", "qwen3-30b-a3b", "qwen3-30b-a3b", 1024, 1, 8),
        ("model", "qwen3-14b", "qwen3-14b", 1024, 2, 4),   # 14B's own 2048 capped at the asked 1024
    ]
    assert [r.index for r in rungs] == list(range(6))
    assert rungs[0].cfg is cfg
    assert rungs[1].reason == "max_seq_length 1024 -> 768"
    assert rungs[2].reason == "max_seq_length 768 -> 512"
    assert "batch_size 2 -> 1" in rungs[3].reason and "grad_accum 4 -> 8" in rungs[3].reason
    assert rungs[3].cfg.batch_size * rungs[3].cfg.grad_accum == 8 == cfg.batch_size * cfg.grad_accum
    # each lighter model trains with its own profile's defaults
    moe, small = models.get_profile("qwen3-30b-a3b"), models.get_profile("qwen3-14b")
    assert rungs[4].cfg.target_modules == moe.lora.target_modules != cfg.target_modules
    assert (rungs[5].cfg.epochs, rungs[5].cfg.lora_r) == (small.train.epochs, small.lora.r) != (cfg.epochs, cfg.lora_r)
    # what to set by hand to run each rung
    assert rungs[1].parameters == {"max_seq_length": 768}
    assert rungs[3].parameters == {"max_seq_length": 512, "batch_size": 1, "grad_accum": 8}
    assert rungs[4].parameters == {"model": "qwen3-30b-a3b"}
    assert rungs[5].parameters == {"model": "qwen3-14b", "max_seq_length": 1024}
    assert rungs[3].how_to() == ("set max_seq_length=512, batch_size=1, grad_accum=8 (papermill: "
                                 "-p max_seq_length 512 -p batch_size 1 -p grad_accum 8)")


def test_ladder_without_a_batch_to_shrink_and_explicit_settings_carry_over():
    choice, cfg = setup(epochs=5, seed=7)          # qwen3-32b defaults: batch 1 x 8 already
    rungs = fallback.ladder(choice, cfg)
    assert [r.kind for r in rungs] == ["asked", "max_seq_length", "max_seq_length", "model", "model"]
    for r in rungs[3:]:                             # explicit epochs/seed follow the lighter models
        assert (r.cfg.epochs, r.cfg.seed) == (5, 7)
    assert rungs[4].cfg.batch_size == models.get_profile("qwen3-14b").train.batch_size


def test_ladder_never_goes_below_256_nor_below_what_the_data_needs():
    choice, cfg = setup("qwen2.5-3b")               # 512, batch 4 x 1, 16-bit, no fallbacks
    rungs = fallback.ladder(choice, cfg)
    assert [(r.kind, r.cfg.max_seq_length) for r in rungs] == [
        ("asked", 512), ("max_seq_length", 384), ("max_seq_length", 256), ("batch_size", 256),
        ("load_in_4bit", 256)]
    assert (rungs[3].cfg.batch_size, rungs[3].cfg.grad_accum) == (1, 4)
    assert rungs[4].cfg.load_in_4bit and rungs[4].parameters["load_in_4bit"] is True

    choice, cfg = setup("qwen3-32b")
    lengths = [r.cfg.max_seq_length for r in fallback.ladder(choice, cfg, min_seq_length=600)
               if r.kind == "max_seq_length"]
    assert lengths == [768, 600]                    # down to the data's need, not to 512
    rungs = fallback.ladder(choice, cfg, min_seq_length=1024)
    assert "max_seq_length" not in [r.kind for r in rungs]
    choice, cfg = setup("gpt-oss-20b")
    assert [r.cfg.max_seq_length for r in fallback.ladder(choice, cfg)] == [2048, 1536, 1024]


def test_smoke_ladder_has_the_same_shape_over_the_stand_in():
    choice, cfg = setup(smoke=True, batch_size=2, grad_accum=4)
    real = fallback.ladder(*setup(batch_size=2, grad_accum=4))
    rungs = fallback.ladder(choice, cfg)
    assert [r.kind for r in rungs] == [r.kind for r in real]
    assert [r.choice.requested.name for r in rungs] == [r.choice.requested.name for r in real]
    assert {r.choice.profile.name for r in rungs} == {"tiny-qwen3"}
    assert [r.cfg.max_seq_length for r in rungs[:3]] == [1024, 768, 512]   # the real steps, scaled to the stand-in's 1024
    assert (rungs[3].cfg.batch_size, rungs[3].cfg.grad_accum) == (1, 8)
    assert "smoke mode: tiny-qwen3" in rungs[4].reason


def test_ladder_wants_a_train_config():
    choice, _ = setup()
    with pytest.raises(TypeError, match="TrainConfig.*resolve_config"):
        fallback.ladder(choice, {"max_seq_length": 1024})


# -- running down the ladder -------------------------------------------------------------------
def failing_at(plan):
    """An attempt that raises ``plan[rung index] = (stage, error)`` and otherwise returns a result."""
    calls = []

    def attempt(rung):
        calls.append(rung)
        where, err = plan.get(rung.index, (None, None))
        for s in ("load", "train", "evaluate"):
            with memory.stage(s):
                if s == where:
                    raise err
        return {"recall": 0.9, "model": rung.choice.profile.name}
    return attempt, calls


def test_out_of_memory_at_load_train_and_evaluation_moves_down_the_ladder(tmp_path):
    choice, cfg = setup(batch_size=2, grad_accum=4)
    attempt, calls = failing_at({0: ("load", oom("torch")), 1: ("train", oom("runtime")),
                                 2: ("evaluate", oom("torch"))})
    seen, cleaned = [], []
    record = RunRecord(tmp_path / "run")
    out = fallback.run_with_fallback(choice, cfg, attempt, on_step=seen.append, record=record,
                                   cleanup=lambda: cleaned.append(1))
    assert out.result == {"recall": 0.9, "model": "qwen3-32b"}
    assert out.rung.index == 3 and out.rung.kind == "batch_size" and out.fell_back
    assert out.attempts == 4 and len(calls) == 4 and len(cleaned) == 3
    assert [e["event"] for e in out.events] == ["out_of_memory"] * 3 + ["succeeded"]
    assert [e["stage"] for e in out.events[:3]] == ["load", "train", "evaluate"]
    assert out.events[0]["next"] == "max_seq_length 1024 -> 768"
    assert out.events[0]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert out.events[1]["error"] == "RuntimeError: CUDA out of memory"
    assert out.events[3]["parameters"] == {"max_seq_length": 512, "batch_size": 1, "grad_accum": 8}
    assert seen == out.events
    saved = json.loads(record.path.read_text())
    assert saved["fallbacks"] == json.loads(json.dumps(out.events))
    assert "batch_size 2 -> 1" in fallback.format_event(out.events[2])


def test_stage_comes_from_the_run_record_phase_and_status_is_restored(tmp_path):
    choice, cfg = setup()
    record = RunRecord(tmp_path / "run")

    def attempt(rung):
        with record.phase("load_model"):
            if rung.index == 0:
                raise oom("runtime")
        return "ok"

    out = fallback.run_with_fallback(choice, cfg, attempt, record=record)
    assert out.result == "ok" and out.rung.index == 1
    saved = json.loads(record.path.read_text())
    assert saved["fallbacks"][0]["stage"] == "load_model"
    assert saved["status"] == "running"            # the phase marked it failed; the run went on
    assert saved["errors"][0]["phase"] == "load_model"  # the history keeps the error


def test_the_failed_attempts_model_is_released_before_the_next_rung():
    class Model:
        pass
    refs = []

    def attempt(rung):
        model = Model()
        model.self_ref = model                      # a cycle, like hooks on a real model
        refs.append(weakref.ref(model))
        if rung.index == 0:
            raise oom()
        return [r() is None for r in refs[:-1]]

    out = fallback.run_with_fallback(*setup(), attempt)
    assert out.result == [True]


def test_automatic_false_stops_and_names_the_next_rungs_and_their_parameters(tmp_path):
    choice, cfg = setup(batch_size=2, grad_accum=4)
    attempt, calls = failing_at({0: ("train", oom())})
    record = RunRecord(tmp_path / "run")
    with pytest.raises(fallback.FallbackStoppedError) as e:
        fallback.run_with_fallback(choice, cfg, attempt, automatic=False, record=record)
    msg = str(e.value)
    assert len(calls) == 1
    assert "automatic=False" in msg and "during train" in msg
    assert "2. max_seq_length 1024 -> 768: set max_seq_length=768 (papermill: -p max_seq_length 768)" in msg
    assert "model='qwen3-30b-a3b'" in msg and "model='qwen3-14b'" in msg
    assert [r.index for r in e.value.next_rungs] == [1, 2, 3, 4, 5]
    assert isinstance(e.value.__cause__, torch.cuda.OutOfMemoryError)
    assert not memory.is_oom(e.value)               # already handled: no second ladder
    saved = json.loads(record.path.read_text())
    assert saved["fallbacks"][0]["automatic"] is False
    assert saved["fallbacks"][0]["next_parameters"] == {"max_seq_length": 768}


def test_unrelated_errors_propagate_unchanged():
    boom = ValueError("labels are all -100 in example 3")
    attempt, calls = failing_at({0: ("train", boom)})
    with pytest.raises(ValueError) as e:
        fallback.run_with_fallback(*setup(), attempt)
    assert e.value is boom and len(calls) == 1
    # also after a fallback
    attempt, calls = failing_at({0: ("load", oom()), 1: ("train", KeyError("input_ids"))})
    with pytest.raises(KeyError):
        fallback.run_with_fallback(*setup(), attempt)
    assert len(calls) == 2


def test_when_every_rung_runs_out_of_memory_the_error_lists_every_attempt():
    choice, cfg = setup(batch_size=2, grad_accum=4)
    rungs = fallback.ladder(choice, cfg)
    attempt, calls = failing_at({i: (["load", "train", "evaluate"][i % 3], oom(["torch", "runtime"][i % 2]))
                                 for i in range(len(rungs))})
    seen = []
    with pytest.raises(fallback.FallbackExhaustedError) as e:
        fallback.run_with_fallback(choice, cfg, attempt, on_step=seen.append)
    msg = str(e.value)
    assert len(calls) == len(rungs) == 6 and len(seen) == 6 and len(e.value.events) == 6
    for r in rungs:
        assert f"{r.index + 1}. {r.describe()}" in msg
    assert msg.count("CUDA out of memory") == 6
    assert "during evaluate" in msg and "qwen3-14b" in msg and "max_seq_length" in msg
    assert seen[-1]["next"] is None


def test_given_rungs_are_used_and_an_empty_list_is_an_error():
    choice, cfg = setup()
    rungs = fallback.ladder(choice, cfg)[3:]
    attempt, calls = failing_at({})
    out = fallback.run_with_fallback(choice, cfg, attempt, rungs=rungs)
    assert out.rung is rungs[0] and out.events == [] and out.attempts == 1 and len(calls) == 1
    with pytest.raises(ValueError, match="rungs is empty"):
        fallback.run_with_fallback(choice, cfg, attempt, rungs=[])


# -- recognising out-of-memory -----------------------------------------------------------------
@pytest.mark.parametrize("exc", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    torch.cuda.OutOfMemoryError(),
    RuntimeError("CUDA out of memory"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ValueError("Some modules are dispatched on the CPU or the disk. Make sure you have enough GPU "
               "RAM to fit the quantized model."),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    RuntimeError("Unsloth: No or negligible GPU memory available for fused cross entropy."),
    MemoryError(),
], ids=lambda e: type(e).__name__ + ":" + str(e)[:30])
def test_is_oom_true(exc):
    assert memory.is_oom(exc)


def _wrapped(explicit):
    try:
        try:
            raise oom()
        except RuntimeError as inner:
            if explicit:
                raise RuntimeError("training failed") from inner
            raise RuntimeError("could not save the checkpoint")
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    ValueError("bad data"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("expected scalar type Float but found Half"),
    KeyError("memory"),
    fallback.FallbackStoppedError("ran out of GPU memory (CUDA out of memory)"),
    KeyboardInterrupt(),
    None,
], ids=repr)
def test_is_oom_false(exc):
    assert not memory.is_oom(exc)


def test_is_oom_follows_explicit_causes_only():
    assert memory.is_oom(_wrapped(explicit=True))       # raise ... from an OOM
    assert not memory.is_oom(_wrapped(explicit=False))  # an unrelated error while handling one


# -- before loading ----------------------------------------------------------------------------
def test_preload_check_fits():
    v = memory.preload_check(models.get_profile("qwen3-32b"), free_gb=23.5)
    assert v.fits and v.needed_gb == 21.0 and v.free_gb == 23.5
    assert "should fit" in v.message and "2.5 GiB to spare" in v.message


def test_preload_check_does_not_fit_and_names_the_fix():
    v = memory.preload_check(models.choose("qwen3-32b", smoke=False), free_gb=15.0)
    assert not v.fits and v.needed_gb == 21.0
    assert "only 15.0 GiB is free" in v.message
    assert "max_seq_length=768" in v.message
    assert "model='qwen3-30b-a3b'" in v.message and "model='qwen3-14b'" in v.message
    assert "Recommended: model='qwen3-14b'" in v.message   # 13.5 GiB fits in 15, 19 does not
    assert "load_in_4bit" not in v.message                 # already 4-bit
    v = memory.preload_check("qwen2.5-3b", free_gb=6.0)    # 16-bit, 9 GiB
    assert not v.fits and "load_in_4bit=True (about 4.0 GiB)" in v.message
    assert "batch_size=1, grad_accum=4" in v.message
    assert memory.preload_check("qwen2.5-3b", load_in_4bit=True, free_gb=6.0).fits


@pytest.mark.skipif(CUDA, reason="checks the no-CUDA note")
def test_preload_check_without_cuda_passes_with_a_note():
    v = memory.preload_check(models.choose("qwen3-32b", smoke=True))
    assert v.fits and v.free_gb is None and "No CUDA GPU" in v.message and "stand-in" in v.message
    v = memory.preload_check("qwen3-32b")
    assert v.fits and "not checked" in v.message and "21.0 GiB" in v.message


# -- measuring and freeing ---------------------------------------------------------------------
@pytest.mark.skipif(CUDA, reason="checks the CPU behaviour")
def test_free_memory_on_cpu_collects_garbage_and_reports_no_vram():
    class Blob:
        pass
    blob = Blob()
    blob.cycle = blob
    ref = weakref.ref(blob)
    gc.disable()
    try:
        del blob
        assert ref() is not None                     # only the cycle collector can free it
        assert memory.free_memory() is None
        assert ref() is None
    finally:
        gc.enable()
    assert memory.free_memory_gb() is None


@pytest.mark.skipif(CUDA, reason="checks the CPU behaviour")
def test_memory_snapshot_on_cpu():
    before = memory.memory_snapshot()
    assert before["device"] == "cpu" and before["vram_free_gb"] is None
    assert before["rss_gb"] > 0.01
    data = bytearray(64 * 1024 * 1024)              # 64 MiB, touched
    after = memory.memory_snapshot()
    line = memory.format_snapshot(after, before)
    assert after["rss_gb"] - before["rss_gb"] > 0.04
    assert line.startswith("no CUDA GPU; process RAM") and "(+0.0" in line
    del data


@pytest.mark.skipif(not CUDA, reason="needs an NVIDIA GPU")
def test_free_memory_gb_is_what_the_driver_reports():
    free, total = torch.cuda.mem_get_info(0)
    assert abs(memory.free_memory_gb() - free / memory.GIB) < 0.5
    assert memory.memory_snapshot()["vram_total_gb"] == round(total / memory.GIB, 3)
