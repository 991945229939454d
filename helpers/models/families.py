"""The model families: their names, the chat-template options they train and answer with, and
the transformers ``model_type`` of each.

Shared by the registry (:mod:`helpers.models`) and the stand-ins (:mod:`helpers.models.standins`,
which pre-train with the same template options), so neither imports the other for them. Adding a
family: an entry in each table here, a chat template and a stand-in spec.
"""

from __future__ import annotations

FAMILIES = ("gpt-oss", "qwen3", "qwen2.5")

#: chat-template options per family (what a profile of that family renders with by default)
TEMPLATE_KWARGS = {
    "qwen3": {"enable_thinking": False},
    "gpt-oss": {"reasoning_effort": "low"},
    "qwen2.5": {},
}

#: transformers' ``config.model_type`` -> family
MODEL_TYPE_TO_FAMILY = {"qwen2": "qwen2.5", "qwen3": "qwen3", "qwen3_moe": "qwen3",
                        "gpt_oss": "gpt-oss"}

#: a string each family's chat template renders (checked against a model folder's own template)
TEMPLATE_MARKERS = {"qwen2.5": "<|im_start|>", "qwen3": "<|im_start|>", "gpt-oss": "<|start|>"}
