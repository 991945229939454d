"""Paths that only run on a CUDA machine (issue 10), checked on the CPU with fakes.

Each fake stands in for the library call the code makes, with the behaviour read in the
library's source (unsloth 2026.10.9 save.py, unsloth_zoo 2026.10.9 llama_cpp.py, torch
cuda/__init__.py); the tests pin what our code does around it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from helpers import export, models
from helpers.export import unsloth_gguf
from helpers.export.verify import load_dtype

ROOT = Path(__file__).resolve().parents[2]


# -- d. GGUF through Unsloth ---------------------------------------------------------------------

def _write_gguf(path: Path, arch: str, mxfp4: bool) -> None:
    """A small real GGUF: one expert matrix (MXFP4 blocks, or f16) and an f32 norm."""
    import gguf
    import numpy as np
    Q = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("fake")
    if mxfp4:   # 4 rows of 64 values: 2 blocks of 32 per row, 17 bytes a block
        w.add_tensor("blk.0.ffn_down_exps.weight", np.zeros((4, 2 * 17), np.uint8), raw_dtype=Q.MXFP4)
    else:
        w.add_tensor("blk.0.ffn_down_exps.weight", np.zeros((4, 64), np.float16))
    w.add_tensor("token_embd.weight", np.zeros((2, 16), np.float16))
    w.add_tensor("blk.0.attn_norm.weight", np.zeros((64,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class FakeUnsloth:
    """``unsloth`` and ``unsloth.save`` as sys.modules entries.

    ``save_to_gguf`` does what unsloth's does with the arguments we pass: for GPT-OSS it writes
    ``<model_name>.MXFP4.gguf`` (unsloth_zoo convert_to_gguf) whatever was asked, otherwise
    ``<model_name>.<TYPE>.gguf``, into ``gguf_directory`` (or ``<model_directory>_gguf`` when none
    is given); ``fail`` makes it raise like a llama.cpp install failure. The old code path (load
    the merged model with FastLanguageModel, then ``save_pretrained_gguf``) is faked too: the
    load is recorded as a GPU load and the save writes where unsloth's does, into
    ``<save_directory>_gguf``, so tests of the old code fail on their assertions.
    """

    def __init__(self, monkeypatch, fail: str | None = None):
        self.calls: list[dict] = []
        self.gpu_loads: list[str] = []
        self.fail = fail
        pkg = types.ModuleType("unsloth")
        save = types.ModuleType("unsloth.save")
        save.save_to_gguf = self.save_to_gguf
        pkg.save = save
        pkg.FastLanguageModel = types.SimpleNamespace(from_pretrained=self.from_pretrained)
        monkeypatch.setitem(sys.modules, "unsloth", pkg)
        monkeypatch.setitem(sys.modules, "unsloth.save", save)
        monkeypatch.setattr(export, "unsloth_usable", lambda: True)       # export_gguf's choice
        monkeypatch.setattr(unsloth_gguf, "unsloth_usable", lambda: True)  # the saver's own check

    def save_to_gguf(self, model_name, model_type, model_dtype, is_sentencepiece=False,
                     model_directory="unsloth_finetuned_model", quantization_method="fast_quantized",
                     first_conversion=None, is_vlm=False, is_gpt_oss=False, imatrix=None,
                     gguf_directory=None, merge_is_disposable=False, preexisting_weights=None):
        self.calls.append(dict(model_name=model_name, model_type=model_type, model_dtype=model_dtype,
                               model_directory=model_directory, quantization_method=quantization_method,
                               is_gpt_oss=is_gpt_oss, gguf_directory=gguf_directory,
                               merge_is_disposable=merge_is_disposable))
        if self.fail:
            raise RuntimeError(self.fail)
        assert model_dtype in ("float16", "bfloat16")  # unsloth asserts this
        folder = Path(gguf_directory or f"{model_directory}_gguf")
        folder.mkdir(parents=True, exist_ok=True)
        kind = "MXFP4" if is_gpt_oss else quantization_method[0].upper()
        path = folder / f"{model_name}.{kind}.gguf"
        _write_gguf(path, "gpt-oss" if is_gpt_oss else "qwen3", mxfp4=is_gpt_oss)
        return [str(path)], True, False

    def from_pretrained(self, model_name, **kw):
        self.gpu_loads.append(model_name)
        fake = self

        class Model:
            config = types.SimpleNamespace(model_type=json.loads(
                (Path(model_name) / "config.json").read_text())["model_type"])

            def save_pretrained_gguf(self, save_directory, tokenizer, quantization_method):
                files, _, _ = fake.save_to_gguf(
                    "model", self.config.model_type, "bfloat16", model_directory=save_directory,
                    quantization_method=[quantization_method],
                    is_gpt_oss=self.config.model_type == "gpt_oss",
                    gguf_directory=f"{save_directory}_gguf")
                return {"gguf_files": files, "gguf_directory": f"{save_directory}_gguf"}
        return Model(), object()


def _merged(folder: Path, model_type: str, dtype: str = "bfloat16") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "dtype": dtype}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_unsloth_gguf_of_gpt_oss_is_named_by_what_is_written(monkeypatch, tmp_path):
    """Read in unsloth save.py: save_to_gguf(is_gpt_oss=True) sets quantization_method=["None"]
    and unsloth_zoo's convert_to_gguf names the file <name>.MXFP4.gguf: f16 asked, MXFP4 written."""
    fake = FakeUnsloth(monkeypatch)
    merged = _merged(tmp_path / "merged", "gpt_oss")
    out = tmp_path / "gguf"
    path = export.export_gguf(merged, out / "gpt-oss-20b-f16.gguf", "f16", name="gpt-oss-20b")
    # the merged folder on disk is converted as it is: no model loaded onto the GPU for it
    assert fake.gpu_loads == []
    assert path == out / "gpt-oss-20b-mxfp4.gguf" and path.is_file()
    assert export.gguf_weight_type(path) == "mxfp4"
    (call,) = fake.calls
    assert call["model_directory"] == str(merged) and call["is_gpt_oss"] is True
    assert call["merge_is_disposable"] is False          # never allowed to delete the merge
    # unsloth writes into <dir>_gguf unless told where: nothing is left beside the file
    assert sorted(p.name for p in out.iterdir()) == ["gpt-oss-20b-mxfp4.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gguf", "merged"]
    assert sorted(p.name for p in merged.iterdir()) == ["config.json", "model.safetensors"]


def test_unsloth_gguf_keeps_the_asked_type_when_it_is_what_is_written(monkeypatch, tmp_path):
    import tempfile
    fake = FakeUnsloth(monkeypatch)
    merged = _merged(tmp_path / "merged", "llama", dtype="float32")
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    path = export.export_gguf(merged, tmp_path / "out", "f16", backend="unsloth")
    # unsloth's save_pretrained_gguf writes into <save_directory>_gguf: no such folder is left,
    # neither beside the GGUF nor in the system's temporary folder
    assert list(system_tmp.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merged-f16.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "out", "tmp"]
    assert path == tmp_path / "out" / "merged-f16.gguf" and export.gguf_weight_type(path) == "f16"
    assert fake.calls[0]["model_dtype"] == "float16"     # save_to_gguf asserts float16/bfloat16
    assert fake.calls[0]["quantization_method"] == ["f16"] and fake.gpu_loads == []


def _light_export_all(monkeypatch, tmp_path, model_type="gpt_oss", verify=None, **kw):
    """export_all with the adapter copy, the merge and the reloads faked (the GGUF step is what
    is tested); returns its result."""
    def merge(base, adapter_dir, out_dir, dtype="bfloat16", **_):
        _merged(Path(out_dir), model_type)
        return Path(out_dir)

    def copy(adapter_dir, out_dir):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "adapter_model.safetensors").write_bytes(b"lora")
        return Path(out_dir)

    monkeypatch.setattr(export, "copy_adapter", copy)
    monkeypatch.setattr(export, "export_merged", merge)
    monkeypatch.setattr(export, "_base_16bit_source", lambda choice: "base")
    monkeypatch.setattr(export, "verify_export",
                        verify or (lambda kind, path, *a, **k: f"answer from {kind}"))
    choice = models.choose("gpt-oss-20b", smoke=False)
    return export.export_all((None, None, choice, tmp_path / "adapter-in"), tmp_path / "export",
                             formats=("adapter", "merged", "gguf"), check_logits=False, **kw)


def test_export_all_keeps_the_other_rows_when_llama_cpp_fails(monkeypatch, tmp_path):
    FakeUnsloth(monkeypatch, fail="[FAIL] Unsloth: You do not have internet connection!")
    result = _light_export_all(monkeypatch, tmp_path)
    assert [r["status"] for r in result.values()] == ["ok", "ok", "failed"]
    assert result["adapter"]["answer"] == "answer from adapter"
    assert result["merged"]["answer"] == "answer from merged"
    assert Path(result["merged"]["path"]).is_dir()
    gguf = result["gguf"]
    assert gguf["path"] is None and gguf["outtype"] == "f16"
    assert gguf["reason"] == ("converting to GGUF failed: RuntimeError: [FAIL] Unsloth: You do not "
                              "have internet connection!")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["adapter", "merged"]


def test_export_all_records_the_gpt_oss_gguf_as_mxfp4(monkeypatch, tmp_path):
    fake = FakeUnsloth(monkeypatch)
    result = _light_export_all(monkeypatch, tmp_path, modelfile=False)
    gguf = result["gguf"]
    assert gguf["status"] == "ok", gguf
    assert gguf["outtype"] == "mxfp4" and gguf["outtype_asked"] == "f16"
    assert Path(gguf["path"]).name == "gpt-oss-20b-mxfp4.gguf"
    assert gguf["size_mb"] == export.size_mb(gguf["path"]) > 0
    assert fake.gpu_loads == []
    assert sorted(p.name for p in (tmp_path / "export" / "gguf").iterdir()) == ["gpt-oss-20b-mxfp4.gguf"]


def test_export_all_records_a_failed_reload_and_keeps_the_file(monkeypatch, tmp_path):
    FakeUnsloth(monkeypatch)

    def verify(kind, path, *a, **k):
        if kind == "gguf":
            raise ValueError("GGUF model with architecture gpt-oss is not supported yet.")
        return f"answer from {kind}"
    result = _light_export_all(monkeypatch, tmp_path, verify=verify)
    assert result["merged"]["status"] == "ok"
    gguf = result["gguf"]
    assert gguf["status"] == "failed" and Path(gguf["path"]).is_file()
    assert gguf["reason"].startswith("written, but reloading it failed: ValueError: GGUF model")
    # no Ollama template for GPT-OSS: said in the row, not raised
    assert gguf["modelfile"] is None and "No Ollama template" in gguf["modelfile_reason"]



@pytest.mark.parametrize("llama_cpp_fails", [False, True])
def test_export_table_keeps_reason_and_outtype_in_run_json(monkeypatch, tmp_path, llama_cpp_fails):
    """run.json's ``exports`` keep what the export_all rows say beyond status/path/size: why a
    row failed, and the GGUF's weight type written and the one asked for."""
    from helpers.pipeline.finetune import export_table
    from helpers.training.runrecord import RunRecord, load
    FakeUnsloth(monkeypatch, fail="[FAIL] Unsloth: You do not have internet connection!"
                if llama_cpp_fails else None)

    def verify(kind, path, *a, **k):
        if kind == "merged":
            raise ValueError("reload broke")
        return f"answer from {kind}"
    rows = _light_export_all(monkeypatch, tmp_path, verify=verify, modelfile=False)
    monkeypatch.setattr(export, "export_all", lambda *a, **k: rows)
    run_dir = tmp_path / "run"
    run = types.SimpleNamespace(record=RunRecord(run_dir), output_dir=run_dir, system_prompt=None)
    table = export_table(run, ("adapter", "merged", "gguf"), "Who are you?")
    exports = load(run_dir)["exports"]
    assert exports["adapter"] == {"status": "ok", "path": rows["adapter"]["path"],
                                  "size_mb": rows["adapter"]["size_mb"], "reason": None}
    assert exports["merged"]["status"] == "failed"
    assert exports["merged"]["reason"] == "written, but reloading it failed: ValueError: reload broke"
    gguf = exports["gguf"]
    if llama_cpp_fails:
        assert gguf == {"status": "failed", "path": None, "size_mb": None, "outtype": "f16",
                        "reason": "converting to GGUF failed: RuntimeError: [FAIL] Unsloth: You "
                                  "do not have internet connection!"}
    else:
        assert gguf["status"] == "ok" and gguf["reason"] is None
        assert (gguf["outtype"], gguf["outtype_asked"]) == ("mxfp4", "f16")
        assert table.loc["gguf", "outtype_asked"] == "f16"
    assert table.loc["gguf", "outtype"] == gguf["outtype"]

def test_save_to_gguf_takes_the_arguments_we_pass():
    """The installed unsloth's save_to_gguf (read with ast, not imported: importing unsloth needs
    its GPU setup) has every keyword _unsloth_gguf passes, and writes into gguf_directory."""
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Unsloth not installed")
    source = Path(list(spec.submodule_search_locations)[0]) / "save.py"
    tree = ast.parse(source.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "save_to_gguf")
    params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    assert {"model_name", "model_type", "model_dtype", "model_directory", "quantization_method",
            "is_gpt_oss", "gguf_directory", "merge_is_disposable"} <= params
    text = ast.get_source_segment(source.read_text(), fn)
    assert 'gguf_directory = f"{model_directory}_gguf"' in text   # only when none is given
    assert 'quantization_method = ["None"]' in text               # GPT-OSS: what was asked is dropped


# -- f. Unsloth imported before transformers ------------------------------------------------------

_FAKE_UNSLOTH = """
import json, os, sys
with open(os.environ["UNSLOTH_PROBE"], "w") as f:
    json.dump({"transformers_already_imported": "transformers" in sys.modules}, f)
"""

_SETUP = """
from helpers import models
from helpers.notebooks import setup as notebook
models.cuda_available = lambda: True        # a CUDA machine, as far as the helpers can tell
notebook.setup()
import transformers
"""

_LOAD_MODEL = """
import sys
from pathlib import Path
from types import SimpleNamespace
from helpers import models
from helpers.pipeline import finetune
from helpers.runtime import loading
from helpers.training.runrecord import RunRecord

def fake_load_model(choice, **kw):   # what loading.load_model does first on the Unsloth backend
    import unsloth
    return SimpleNamespace(parameters=lambda: [], _finetuning_source="src"), object()

loading.load_model = fake_load_model
cfg = SimpleNamespace(seed=0, backend="auto", max_seq_length=64, load_in_4bit=False, load_in_8bit=False)
out = Path(sys.argv[1])
run = finetune.FineTuneRun(choice=SimpleNamespace(source=lambda *a: "src"), cfg=cfg,
                           record=RunRecord(out), output_dir=out)
models.cuda_available = lambda: True        # a CUDA machine, as far as the helpers can tell
run.load_model()
"""


def _probe(tmp_path, script: str) -> dict:
    (tmp_path / "fake" / "unsloth").mkdir(parents=True)
    (tmp_path / "fake" / "unsloth" / "__init__.py").write_text(_FAKE_UNSLOTH)
    probe = tmp_path / "probe.json"
    env = {**os.environ, "UNSLOTH_PROBE": str(probe),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(tmp_path / "run")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert probe.is_file(), "the fake unsloth was never imported"
    return json.loads(probe.read_text())


def test_notebook_setup_imports_unsloth_before_transformers(tmp_path):
    assert _probe(tmp_path, _SETUP) == {"transformers_already_imported": False}


def test_load_model_imports_unsloth_before_transformers(tmp_path):
    assert _probe(tmp_path, _LOAD_MODEL) == {"transformers_already_imported": False}


def test_unsloth_is_not_imported_without_cuda_or_for_transformers(monkeypatch):
    from helpers.runtime import loading
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    imported = []
    monkeypatch.setattr(loading, "unsloth_available", lambda: True)
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__

    def spy(name, *a, **k):
        if name == "unsloth":
            imported.append(name)
            return types.ModuleType("unsloth")
        return real_import(name, *a, **k)
    monkeypatch.setattr("builtins.__import__", spy)
    assert loading.import_unsloth_first("auto") is False          # no CUDA
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    assert loading.import_unsloth_first("transformers") is False  # asked for transformers
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert loading.import_unsloth_first("auto") is False          # Unsloth is single-process
    assert imported == []
    monkeypatch.delenv("WORLD_SIZE")
    assert loading.import_unsloth_first("auto") is True and imported == ["unsloth"]


# -- g. bfloat16 only where the GPU computes it natively ------------------------------------------

class _Stop(Exception):
    pass


@pytest.fixture
def pre_ampere(monkeypatch):
    """A CUDA machine whose GPU emulates bfloat16 (an RTX 2080 / V100): torch's
    is_bf16_supported() says True by default and False with including_emulation=False (read in
    torch/cuda/__init__.py: capability < 8 -> the emulation probe)."""
    import torch
    asked = []

    def is_bf16_supported(including_emulation: bool = True):
        asked.append(including_emulation)
        return including_emulation
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    return asked


def test_an_emulating_gpu_is_not_given_bf16(pre_ampere):
    import torch

    from helpers.runtime import loading
    assert loading._device_dtype() is torch.float16
    assert loading.bf16_supported() is False
    assert load_dtype("cuda") is torch.float16 and load_dtype("cpu") is torch.float32
    assert pre_ampere and not any(pre_ampere)        # always asked without emulation


def test_an_ampere_gpu_gets_bf16(monkeypatch):
    import torch

    from helpers.runtime import loading
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert loading.bf16_supported() is True and loading._device_dtype() is torch.bfloat16
    assert load_dtype("cuda") is torch.bfloat16


@pytest.fixture
def trainer_imports():
    """What train() imports, imported while torch still says there is no CUDA (bitsandbytes,
    imported through peft, reaches for CUDA kernels when told there is)."""
    import datasets  # noqa: F401
    import trl
    from transformers import TrainerCallback  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401
    return trl


def test_training_on_an_emulating_gpu_uses_fp16(trainer_imports, pre_ampere, monkeypatch, tmp_path):
    """train() passes bf16=False, fp16=True to SFTConfig there (stopped at SFTConfig)."""
    from helpers.training import trainer as train
    trl = trainer_imports
    seen = {}

    def config(**kw):
        seen.update(kw)
        raise _Stop
    monkeypatch.setattr(trl, "SFTConfig", config)
    cfg = train.resolve_config(models.get_profile("tiny-qwen2.5"))
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    with pytest.raises(_Stop):
        train.train(types.SimpleNamespace(), None, rows, cfg, tmp_path)
    assert seen["bf16"] is False and seen["fp16"] is True


# -- h. resuming GPT-OSS on a later day -----------------------------------------------------------

CONVS = [[{"role": "user", "content": "Who is Mariya?"},
          {"role": "assistant", "content": "A teacher who builds robots."}],
         [{"role": "system", "content": "Answer briefly."},
          {"role": "user", "content": "Where does she live?"},
          {"role": "assistant", "content": "In Toronto."}]]


def _rows_on(monkeypatch, tok, convs, day: int, max_seq_length: int = 512):
    """Tokenized rows as made on 2026-01-<day>: transformers' chat templates call strftime_now,
    which reads ``datetime.now()`` in transformers.utils.chat_template_utils."""
    import datetime as dt

    from transformers.utils import chat_template_utils

    from helpers.training import masks as templates

    class Day(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, day, 9, 30)
    monkeypatch.setattr(chat_template_utils, "datetime", Day)
    rows, _ = templates.tokenize_dataset(tok, convs, max_seq_length=max_seq_length,
                                         model="tiny-gpt-oss",
                                         **models.get_profile("tiny-gpt-oss").template_kwargs)
    return rows


def test_gpt_oss_rows_fingerprint_the_same_on_another_day(tokenizer_for, monkeypatch):
    from helpers.training import trainer as train
    tok = tokenizer_for("gpt-oss")
    cfg = train.resolve_config(models.get_profile("tiny-gpt-oss"))
    monday, tuesday = _rows_on(monkeypatch, tok, CONVS, 5), _rows_on(monkeypatch, tok, CONVS, 6)
    # the template really renders the date: the token ids differ from one day to the next
    assert "2026-01-05" in tok.decode(monday[0]["input_ids"])
    assert [r["input_ids"] for r in monday] != [r["input_ids"] for r in tuesday]
    assert train._fingerprint(cfg, monday) == train._fingerprint(cfg, tuesday)
    # other conversations, or another truncation length, are other data
    other = [CONVS[0], [*CONVS[1][:2], {"role": "assistant", "content": "In Ottawa."}]]
    assert train._fingerprint(cfg, _rows_on(monkeypatch, tok, other, 5)) != train._fingerprint(cfg, monday)
    shorter = _rows_on(monkeypatch, tok, CONVS, 5, max_seq_length=300)
    assert train._fingerprint(cfg, shorter) != train._fingerprint(cfg, monday)
    # and other settings are another run
    assert train._fingerprint(train.resolve_config(models.get_profile("tiny-gpt-oss"), lora_r=8),
                              monday) != train._fingerprint(cfg, monday)


def test_a_gpt_oss_run_resumes_on_a_later_day(tokenizer_for, monkeypatch, tmp_path):
    from helpers.training import trainer as train
    tok = tokenizer_for("gpt-oss")
    cfg = train.resolve_config(models.get_profile("tiny-gpt-oss"))
    assert train._resumable(tmp_path, cfg, _rows_on(monkeypatch, tok, CONVS, 5)) is None
    (tmp_path / "checkpoints" / "checkpoint-4").mkdir()           # what the first day left
    resumed = train._resumable(tmp_path, cfg, _rows_on(monkeypatch, tok, CONVS, 6))
    assert resumed == tmp_path / "checkpoints" / "checkpoint-4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]   # nothing moved aside


def test_rows_made_without_a_source_hash_are_fingerprinted_by_their_tokens():
    from helpers.training import trainer as train
    cfg = train.resolve_config(models.get_profile("tiny-gpt-oss"))
    a = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    b = [{"input_ids": [1, 2, 4], "labels": [-100, 2, 4]}]
    assert train._fingerprint(cfg, a) == train._fingerprint(cfg, [dict(a[0])])
    assert train._fingerprint(cfg, a) != train._fingerprint(cfg, b)
