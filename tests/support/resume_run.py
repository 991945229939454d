"""Train a random-weight tiny Qwen3 for a few epochs into OUT and print the adapter's checksum.

    python tests/support/resume_run.py MODEL_DIR OUT [SLEEP_PER_STEP]

SLEEP_PER_STEP slows each step so that a test can SIGKILL the run part way through.
"""

from __future__ import annotations

import json
import sys
import time


def main(model_dir: str, out: str, sleep: float = 0.0) -> dict:
    from transformers import TrainerCallback

    from helpers import models
    from helpers.runtime.loading import load_model
    from helpers.training import masks as templates
    from helpers.training.config import resolve_config
    from helpers.training.trainer import add_lora, train

    choice = models.choose(model_dir)
    cfg = resolve_config(choice.profile, epochs=4, batch_size=2, grad_accum=1, learning_rate=5e-3,
                         logging_steps=1, backend="transformers", report_to="none", keep_checkpoints=0)
    model, tok = load_model(choice, backend="transformers")
    convs = [[{"role": "user", "content": f"Question {i}?"},
              {"role": "assistant", "content": f"Answer number {i} is short."}] for i in range(6)]
    rows, _ = templates.tokenize_dataset(tok, convs, max_seq_length=128, model=model_dir,
                                         **choice.profile.template_kwargs)
    model = add_lora(model, cfg)

    class Slow(TrainerCallback):
        def on_step_end(self, *a, **k):
            time.sleep(sleep)

    result = train(model, tok, rows, cfg, out, callbacks=[Slow()] if sleep else [])
    state = {k: v.detach().double().sum().item() for k, v in model.named_parameters() if "lora_" in k}
    return {"steps": result.steps, "resumed_from": result.resumed_from,
            "checksum": sum(state.values()), "final_loss": result.final_loss}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)))
