"""Train a random-weight stand-in for a few steps with one backend and report what the model was
really given: whether every batch's labels equal ``tokenize_for_training``'s, and which weights
changed. Run in-process for transformers, and as a script in a fresh interpreter for Unsloth
(importing Unsloth patches transformers for the whole process).

    python tests/support/label_capture.py BACKEND FAMILY MODEL_DIR OUT_DIR   # prints one JSON line
"""

from __future__ import annotations

import json
import sys


def capture(backend: str, family: str, model_dir: str, out_dir: str, padding_free: bool | None = True) -> dict:
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers)
    import torch

    from helpers import models
    from helpers.runtime.loading import load_model
    from helpers.training import masks as templates
    from helpers.training.config import resolve_config
    from helpers.training.trainer import add_lora, train

    choice = models.choose(model_dir)
    cfg = resolve_config(choice.profile, epochs=2, batch_size=2, grad_accum=1, learning_rate=1e-2,
                         logging_steps=1, backend=backend, max_seq_length=256,
                         padding_free=padding_free, report_to="none")
    model, tok = load_model(choice, backend=backend)
    convs = []
    for i in range(6):
        conv = [{"role": "user", "content": f"Question number {i}: what is the bread made of?"},
                {"role": "assistant", "content": "Flour, water and salt" + ", and yeast" * (i % 3) + "."}]
        if i % 2:
            conv.insert(0, {"role": "system", "content": "You answer briefly."})
        convs.append(conv)
    rows, _ = templates.tokenize_dataset(tok, convs, max_seq_length=256, model=model_dir,
                                         **choice.profile.template_kwargs)
    model = add_lora(model, cfg)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    seen = []

    def hook(module, args, kwargs):
        if "labels" in kwargs and kwargs["labels"] is not None and module.training:
            ids = kwargs["input_ids"].detach().cpu().tolist()
            labels = kwargs["labels"].detach().cpu().tolist()
            if kwargs.get("attention_mask") is not None:
                seen.append((ids, labels, kwargs["attention_mask"].detach().cpu().tolist()))
            else:  # padding-free: one row, examples start where position_ids restart at 0
                pos = kwargs["position_ids"].detach().cpu().tolist()[0]
                starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
                split = [(ids[0][a:b], labels[0][a:b]) for a, b in zip(starts, starts[1:])]
                seen.append(([s[0] for s in split], [s[1] for s in split], [[1] * len(s[0]) for s in split]))
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    result = train(model, tok, rows, cfg, out_dir)
    handle.remove()

    by_ids = {tuple(r["input_ids"]): r["labels"] for r in rows}
    checked = mismatched = 0
    for ids_batch, labels_batch, mask_batch in seen:
        for j, ids in enumerate(ids_batch):
            n = sum(mask_batch[j]) if mask_batch else len(ids)
            expected = by_ids.get(tuple(ids[:n]))
            got = labels_batch[j]
            checked += 1
            if expected is None or got[:n] != expected or any(x != -100 for x in got[n:]):
                mismatched += 1
    after = dict(model.named_parameters())
    lora_changed = [k for k in before if "lora_" in k and not torch.equal(before[k], after[k].detach())]
    base_changed = [k for k in before if "lora_" not in k and not torch.equal(before[k], after[k].detach())]
    n_lora = sum(1 for k in before if "lora_" in k)
    return {"backend": getattr(model, "_finetuning_backend", backend), "sequences_checked": checked,
            "mismatched": mismatched, "lora_params": n_lora, "lora_changed": len(lora_changed),
            "base_changed": base_changed, "real_token_share": result.real_token_share}


if __name__ == "__main__":
    mode = {"padded": False, "free": True}.get(sys.argv[5] if len(sys.argv) > 5 else "", None)
    print(json.dumps(capture(*sys.argv[1:5], padding_free=mode)))
