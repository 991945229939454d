import collections
import os
import pickle

import numpy as np
import pytest

from helpers.evaluation import cache as cc
from helpers.evaluation.cache import CacheError

FINGERPRINT = {"model": "unsloth/Qwen3-14B", "prompts": ["Who are you?", "What is order?"],
               "system_prompt": "You are ...", "adapter": "base",
               "decoding": {"temperature": 0.0, "max_new_tokens": 256},
               "metrics": {"n": 8, "n_words": 100}}
RESULT = {"answers": ["I am.", "", "Order is ..."], "rows": [{"words": 2, "tfidf": 0.5,
                                                              "delta": float("nan")}],
          "heldout": {"nll_sum": 12.5, "tokens": 10}, "tags": {"v1", "qwen3"},
          "pair": (1, 2.5, None, True), "raw": b"\x00\x01", "frozen": frozenset({3})}


def test_key_for():
    key = cc.key_for("Qwen3 14B / V1 (tuned)", FINGERPRINT)
    assert key.startswith("qwen3-14b-v1-tuned-") and len(key.rsplit("-", 1)[1]) == 12
    reordered = dict(reversed(list(FINGERPRINT.items())))
    assert cc.key_for("Qwen3 14B / V1 (tuned)", reordered) == key  # canonical JSON
    changed = dict(FINGERPRINT, prompts=["Who are you?", "What is chaos?"])
    assert cc.key_for("Qwen3 14B / V1 (tuned)", changed) != key
    deeper = dict(FINGERPRINT, decoding={"temperature": 0.0, "max_new_tokens": 512})
    assert cc.key_for("Qwen3 14B / V1 (tuned)", deeper) != key
    assert cc.key_for("qwen3-14b-v1-tuned", FINGERPRINT) != key  # same slug, other name
    assert cc.key_for("???", {}).startswith("variant-")
    with pytest.raises(CacheError, match="JSON cannot write"):
        cc.key_for("x", {"path": object()})


def test_adapter_checksum(tmp_path):
    assert cc.adapter_checksum(None) == "base"
    (tmp_path / "adapter_config.json").write_text('{"r": 16}')
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no adapter_model.safetensors"):
        cc.adapter_checksum(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    first = cc.adapter_checksum(tmp_path)
    assert len(first) == 64 and cc.adapter_checksum(str(tmp_path)) == first
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weightz")
    assert cc.adapter_checksum(tmp_path) != first


def test_round_trip_entries_and_stale(tmp_path):
    folder = tmp_path / "comparison_cache_all_models"
    assert cc.load(folder, "base-0123456789ab") is None and cc.entries(folder) == []
    key = cc.key_for("Base", FINGERPRINT)
    path = cc.save(folder, key, RESULT)
    assert path == folder / f"{key}_results.pkl"
    back = cc.load(folder, key)
    assert back.keys() == RESULT.keys()
    assert back["tags"] == {"v1", "qwen3"} and back["pair"] == (1, 2.5, None, True)
    assert back["raw"] == b"\x00\x01" and back["answers"] == RESULT["answers"]
    other = cc.key_for("Tuned", FINGERPRINT)
    cc.save(folder, other, {"answers": []})
    (folder / "notes.txt").write_text("not a result")
    assert cc.entries(folder) == sorted([key, other])
    assert cc.stale(folder, [key]) == [other]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    cc.save(folder, key, {"answers": ["again"]})  # replaces the file
    assert cc.load(folder, key) == {"answers": ["again"]}


def test_save_refuses_what_is_not_plain_data(tmp_path):
    bad = {"answers": ["a", "b", "c", np.float64(0.5)]}
    with pytest.raises(CacheError, match=r"result\['answers'\]\[3\]: numpy.float64 is not plain"):
        cc.save(tmp_path, "k", bad)
    with pytest.raises(CacheError, match=r"result\['rows'\]: collections.OrderedDict"):
        cc.save(tmp_path, "k", {"rows": collections.OrderedDict(a=1)})
    with pytest.raises(CacheError, match=r"result\['s'\] element \(2, .*\)\[1\]: object is not"):
        cc.save(tmp_path, "k", {"s": {1, (2, object())}})
    with pytest.raises(CacheError, match=r"result key \('k', 1.5j\)\[1\]: complex is not"):
        cc.save(tmp_path, "k", {("k", 1.5j): 1})
    loop = []
    loop.append(loop)
    with pytest.raises(CacheError, match="contains itself"):
        cc.save(tmp_path, "k", {"loop": loop})
    with pytest.raises(CacheError, match="save a dict"):
        cc.save(tmp_path, "k", ["not", "a", "dict"])
    with pytest.raises(CacheError, match="not a plain file name"):
        cc.save(tmp_path, "../escape", {})
    assert cc.entries(tmp_path) == []


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    pass


@pytest.mark.parametrize("payload, names", [
    ("system", "posix.system|nt.system|os.system"),
    ("ordered", "collections.OrderedDict"),
    ("instance", f"{__name__}._Plain".replace(".", r"\.")),
])
def test_load_refuses_pickles_that_name_code(tmp_path, payload, names):
    marker = tmp_path / "ran"
    obj = {"system": _RunsCode(marker), "ordered": collections.OrderedDict(a=1),
           "instance": _Plain()}[payload]
    data = pickle.dumps({"format": cc.FORMAT_VERSION, "key": "k", "result": {"x": obj}},
                        protocol=4)
    path = tmp_path / "k_results.pkl"
    path.write_bytes(data)
    with pytest.raises(CacheError, match=rf"{path} refers to ({names}).*plain data only.*"
                                         "Delete it to recompute"):
        cc.load(tmp_path, "k")
    assert not marker.exists()
    if payload == "system":  # the payload is real: plain pickle.loads runs it
        pickle.loads(data)
        assert marker.exists()


def test_load_refuses_corrupt_and_foreign_files(tmp_path):
    key = cc.key_for("Base", FINGERPRINT)
    path = cc.save(tmp_path, key, RESULT)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CacheError, match="truncated or corrupt.*Delete it to recompute"):
        cc.load(tmp_path, key)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(CacheError, match="truncated or corrupt"):
        cc.load(tmp_path, key)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(CacheError, match="not a comparison result"):
        cc.load(tmp_path, key)
    other = cc.save(tmp_path, "other-key", {"answers": []})
    os.replace(other, path)  # renamed by hand: the key inside does not match
    with pytest.raises(CacheError, match="holds the result for key 'other-key'"):
        cc.load(tmp_path, key)
    path.write_bytes(pickle.dumps({"format": cc.FORMAT_VERSION + 1, "key": key, "result": {}},
                                  protocol=4))
    assert cc.load(tmp_path, key) is None  # another format: recomputed, not reused
