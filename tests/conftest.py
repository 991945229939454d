"""Shared fixtures: tiny stand-ins built offline (cached in $FINETUNING_CACHE)."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("FINETUNING_SMOKE", None)
warnings.filterwarnings("ignore", category=DeprecationWarning)

FAMILY_STANDIN = {"qwen2.5": "tiny-qwen2.5", "qwen3": "tiny-qwen3", "gpt-oss": "tiny-gpt-oss"}


def cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if cuda():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def random_standin():
    """Path of a random-weight stand-in (tokenizer, template and shapes of the family; fast)."""
    from helpers.models import standins
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = standins.ensure(FAMILY_STANDIN[family], pretrain_steps=0)
        return cache[family]
    return get


@pytest.fixture(scope="session")
def tokenizer_for(random_standin):
    from transformers import AutoTokenizer
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = AutoTokenizer.from_pretrained(random_standin(family))
        return cache[family]
    return get
