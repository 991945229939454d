"""A :class:`helpers.pipeline.finetune.FineTuneRun` that trains on Tinker's service
(backend="tinker", :mod:`helpers.training.tinker_backend`): the same cells, no local GPU.

    run = TinkerRun.start(model="qwen3-32b", name="mariya", replay=0)   # backend="tinker"
    run.load_data("NoteBooks/Mariya/mariya.jsonl")
    outcome = run.train_with_fallback((), ["Who is Mariya Sha?"])      # base answers, train, tuned answers
    run.cost()                                                          # tokens sent, USD where known
    run.finish()

Here only the tokenizer is loaded (the real model's: Tinker trains the real model, so smoke mode
does not apply); answers come from Tinker's sampler (the base model before training, the trained
weights after); there is no out-of-memory ladder (nothing runs out of memory here); the adapter
lands in ``<run>/adapter`` as a PEFT folder the comparison and the export load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from helpers.core import figures as plots
from helpers.pipeline import arguments
from helpers.pipeline.finetune import FineTuneRun
from helpers.training import fallback, tinker_backend
from helpers.training.tinker_models import TinkerModelError, TinkerUnavailableError, TokenCounts, tinker_base_model

log = logging.getLogger(__name__)


@dataclass
class TinkerRun(FineTuneRun):
    client: Any = None              # tinker.ServiceClient (made from TINKER_API_KEY when None)
    rest: Any = None                # tinker.RestClient
    tokens: TokenCounts = field(default_factory=TokenCounts)
    prices: tuple | None = None     # (prefill, sample, train) USD per million tokens, if known
    _samplers: dict = field(default_factory=dict)

    @classmethod
    def start(cls, *, model: str, client=None, rest=None, tokenizer=None, prices=None,
              **kwargs) -> "TinkerRun":
        """:meth:`FineTuneRun.start` with ``backend="tinker"`` (the SDK and TINKER_API_KEY are
        checked there) and the model checked against Tinker's list before any work."""
        kwargs.setdefault("backend", "tinker")
        if kwargs["backend"] != "tinker":
            raise ValueError(f"TinkerRun trains with backend='tinker', not {kwargs['backend']!r}; "
                             "use FineTuneRun.start for local training.")
        if kwargs.get("smoke"):
            log.warning("smoke mode does not apply to backend='tinker': it trains the real %s on "
                        "Tinker's service (tokens are billed)", model)
        kwargs["smoke"] = False     # Tinker trains the real model; no local GPU is needed
        tinker_base_model(model)    # refuse models Tinker does not serve, naming the nearest
        run = super().start(model=model, **kwargs)
        run.client = client or tinker_backend.service_client()
        run.rest = rest or tinker_backend.rest_client()
        run.tokenizer, run.prices = tokenizer, prices
        run.record.update("model", {"backend": "tinker", "device": "tinker",
                                    "source": tinker_base_model(model)})
        return run

    @property
    def base_model(self) -> str:
        return tinker_base_model(self.choice.requested.name)

    def load_model(self, adapter=None):
        """Only the tokenizer: the model lives on Tinker."""
        if adapter is not None:
            raise ValueError("TinkerRun cannot load a local adapter; evaluate it with the comparison "
                             "notebook (it loads <run>/adapter onto the base model).")
        if self.tokenizer is None:
            from transformers import AutoTokenizer
            with self.record.phase("load_model"):
                self.tokenizer = AutoTokenizer.from_pretrained(self.profile.hub_id or self.base_model)
        return None

    def add_lora(self):
        return None                 # Tinker makes the LoRA (create_lora_training_client)

    def _sampler(self, trained: bool, max_new_tokens: int | None, greedy: bool):
        key = (trained, max_new_tokens, greedy)
        if key not in self._samplers:
            kw = dict(counts=self.tokens, template_kwargs=self.profile.template_kwargs,
                      system_prompt=self.system_prompt, greedy=greedy,
                      max_new_tokens=max_new_tokens or self.profile.inference.max_new_tokens)
            if trained:
                self._samplers[key] = tinker_backend.generate_fn(
                    tinker_backend._result(self.result.training_client.save_weights_and_get_sampling_client()),
                    self.tokenizer, **kw)
            else:
                self._samplers[key] = tinker_backend.generate_fn(
                    tinker_backend._result(self.client.create_sampling_client(base_model=self.base_model)),
                    self.tokenizer, **kw)
        return self._samplers[key]

    def ask(self, questions: Sequence[str], *, label: str, greedy: bool = True,
            max_new_tokens: int | None = None) -> list[str]:
        """Answers sampled on Tinker: the base model before :meth:`train`, the trained weights after."""
        if self.tokenizer is None:
            self.load_model()
        trained = self.result is not None and hasattr(self.result, "training_client")
        with self.record.phase(f"generate_{label}"):
            answers = self._sampler(trained, max_new_tokens, greedy)(list(questions))
        self.record.update("answers", {label: [{"question": q, "answer": a}
                                               for q, a in zip(questions, answers)]})
        self.answers[label] = answers
        self.cost()
        return answers

    def train(self, *, live_plot: bool = True):
        if not self.rows:
            self.tokenize()
        live = plots.LiveLossPlot(f"{self.profile.display_name} on Tinker: training loss") if live_plot else None
        try:
            with self.record.phase("train"):
                self.result = tinker_backend.train(
                    self.rows, self.cfg, self.output_dir, model=self.choice.requested.name,
                    tokenizer=self.tokenizer, client=self.client, rest=self.rest, record=self.record,
                    family=self.choice.family, prices=self.prices, on_log=live)
        finally:
            if live:
                live.close()
        for k, v in self.result.tokens.as_dict().items():   # the training tokens join the sampling ones
            if k != "prefill" and k != "sample":
                setattr(self.tokens, k, v)
        plots.save_loss_plot(self.result.loss_history, self.output_dir / "loss.png",
                             f"{self.profile.display_name} on Tinker: training loss")
        self.cost()
        return self.result

    def cost(self) -> dict:
        """Tokens sent to Tinker so far (training, prompts, sampled) and their cost where a price
        is known; also in run.json ``tinker``."""
        return tinker_backend.record_cost(self.record, self.base_model, self.tokens, self.prices)

    def train_with_fallback(self, probes: Sequence[dict] = (), questions: Sequence[str] = (), *,
                            automatic: bool = True, on_step=None, live_plot: bool = True,
                            min_seq_length: int | None = None, general: bool = False):
        """As :meth:`FineTuneRun.train_with_fallback` (base answers, train, tuned answers) with one
        rung: nothing here runs out of memory."""
        rung = fallback.Rung(choice=self.choice, cfg=self.cfg, reason="trained on Tinker's service")

        def attempt(_rung):
            self.load_model()
            self.measure("base", questions, probes, general=general)
            result = self.train(live_plot=live_plot)
            self.measure("tuned", questions, probes, general=general)
            return result

        return fallback.run_with_fallback(self.choice, self.cfg, attempt, automatic=automatic,
                                          on_step=on_step, record=self.record, rungs=[rung])

    def finish(self) -> dict[str, Any]:
        """:meth:`FineTuneRun.finish`, with the Tinker tokens and cost logged (run.json ``tinker``;
        ``notebook.run_summary`` shows them)."""
        cost = self.cost()
        rec = super().finish()
        log.info("Tinker: %s tokens%s", ", ".join(f"{k} {v:,}" for k, v in cost["tokens"].items()),
                 f", {cost['usd']:.4f} USD" if cost.get("usd") is not None else
                 " (no price known: pass prices= for dollars)")
        return rec


arguments.RUN_CLASSES["tinker"] = TinkerRun
arguments.RUN_ERRORS.extend([TinkerUnavailableError, TinkerModelError])
