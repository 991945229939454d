"""One DPO run, step by step: what the persona DPO notebook calls cell by cell.

:class:`PreferenceRun` is a :class:`helpers.pipeline.finetune.FineTuneRun` (same model loading,
settings, run record, questions before/after, out-of-memory ladder) whose data are preference
pairs made from the V2 set (:mod:`helpers.data.preference`) and whose training is DPO
(:mod:`helpers.training.preference`).

It starts **from the base model**: a fresh LoRA adapter on the base weights, the reference being
the base model itself (TRL's frozen copy of the fresh adapter, whose update is zero), and the rejected answers the same base model's
greedy answers. So the reference model is exactly the model that wrote the rejected answers, and
the run folder's adapter loads on the base model like any other run's (the comparison takes it as
the variant ``"<model>:dpo"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from helpers.core import figures as plots
from helpers.data import preference as pref_data
from helpers.models.generate import answer
from helpers.pipeline.finetune import FineTuneRun, _ReplicaRecord
from helpers.runtime import memory
from helpers.training import divergence, fallback
from helpers.training import masks as templates
from helpers.training import preference as dpo
from helpers.training.preference_plot import dpo_figure, save_dpo_plot

log = logging.getLogger(__name__)

#: new tokens per rejected answer (None: the model's default); V2 answers are ~100-300 words
REJECTED_MAX_NEW_TOKENS = None


@dataclass
class PreferenceRun(FineTuneRun):
    """State of one DPO run. Create with :meth:`start`; each method is one notebook cell."""

    dpo: dpo.DPOSettings = field(default_factory=dpo.DPOSettings)
    max_pairs: int | None = None            # V2 examples made into pairs (None: all)
    heldout_fraction: float = pref_data.HELDOUT_FRACTION
    rejected_max_new_tokens: int | None = REJECTED_MAX_NEW_TOKENS
    pairs: Any = None                        # helpers.data.preference.Pairs, once made
    eval_rows: list = field(default_factory=list)
    dpo_given: tuple = ()                    # DPO settings given explicitly (their default reasons left out)

    @classmethod
    def start(cls, *, beta: float | None = None, loss_type: str | None = None,
              dpo_learning_rate: float | None = None, max_pairs: int | None = None,
              heldout_fraction: float | None = None, rejected_max_new_tokens: int | None = None,
              parameters: dict | None = None, **kwargs) -> "PreferenceRun":
        """As :meth:`FineTuneRun.start`, plus DPO's settings (``None``: the default of
        :class:`helpers.training.preference.DPOSettings`, with its reason in run.json)."""
        dpo.require_one_process()
        given = {"beta": beta, "loss_type": loss_type, "learning_rate": dpo_learning_rate}
        settings = dpo.DPOSettings(**{k: v for k, v in given.items() if v is not None})
        extra = {"recipe": "dpo", "beta": beta, "loss_type": loss_type, "dpo_learning_rate": dpo_learning_rate,
                 "max_pairs": max_pairs, "heldout_fraction": heldout_fraction}
        run = super().start(parameters={**extra, **(parameters or {})}, **kwargs)
        run.dpo, run.max_pairs = settings, max_pairs
        run.heldout_fraction = pref_data.HELDOUT_FRACTION if heldout_fraction is None else heldout_fraction
        run.rejected_max_new_tokens = rejected_max_new_tokens
        run.dpo_given = tuple(k for k, v in given.items() if v is not None)
        run._record_settings()
        return run

    def _record_settings(self) -> None:
        self.record.update("dpo", {**self.dpo.to_dict(), "learning_rate": dpo.dpo_learning_rate(self.cfg, self.dpo),
                                   "reasons": {k: v for k, v in dpo.DPOSettings.REASONS.items()
                                               if k not in self.dpo_given},
                                   "start": "base model (fresh LoRA adapter; reference = the base model)"})

    def dpo_settings(self):
        """DPO's settings as resolved, with the reason for each default."""
        import pandas as pd
        values = {**self.dpo.to_dict(), "learning_rate": dpo.dpo_learning_rate(self.cfg, self.dpo)}
        return pd.DataFrame([{"setting": k, "value": v,
                              "why": "set explicitly" if k in self.dpo_given else dpo.DPOSettings.REASONS.get(k, "")}
                             for k, v in values.items()]).set_index("setting")

    # -- data ----------------------------------------------------------------------------
    def make_pairs(self) -> pref_data.Pairs:
        """Preference pairs from the loaded V2 set: the rejected answers are the base model's
        (generated now, or read from ``<run>/preference/rejected_answers.jsonl``). Saved as
        ``<run>/preference/pairs_{train,heldout}.jsonl``."""
        if self.dataset is None:
            raise ValueError("No V2 data loaded: call run.load_data(<v2_train.jsonl>) before make_pairs().")
        if self.model is None:
            self.load_model()
        if hasattr(self.model, "peft_config"):
            raise ValueError("The model already carries an adapter, so its answers are not the base model's: "
                             "make the pairs before training (a fresh run, or run.free() and load_model()).")
        folder = self.output_dir / "preference"
        profile, tokenizer, model = self.profile, self.tokenizer, self.model

        def generate(questions, system_prompt):
            return answer(model, tokenizer, questions, profile, system_prompt=system_prompt,
                          max_new_tokens=self.rejected_max_new_tokens)
        decoding = {"greedy": True, "max_new_tokens": self.rejected_max_new_tokens or profile.inference.max_new_tokens,
                    "template_kwargs": profile.inference.template_kwargs}
        who = f"{profile.name} @ {getattr(model, '_finetuning_source', None) or self.choice.source()}"
        with self.record.phase("make_pairs"):
            self.pairs = pref_data.build(self.dataset.conversations, generate,
                                         cache=pref_data.RejectedCache(folder / pref_data.CACHE_NAME),
                                         model=who, decoding=decoding, max_pairs=self.max_pairs,
                                         heldout_fraction=self.heldout_fraction, seed=self.cfg.seed)
            files = self.pairs.save(folder)
        self.record.update("data", {"pairs": self.pairs.stats, "pair_files": {k: str(v) for k, v in files.items()}})
        return self.pairs

    def tokenize(self) -> dict[str, Any]:
        """Tokenize the pairs with our response-only masks (see :mod:`helpers.training.preference`)."""
        if self.pairs is None:
            self.make_pairs()
        kwargs = templates.with_thinking(self.tokenizer, self.profile.template_kwargs, self.thinking)
        with self.record.phase("tokenize"):
            self.rows, stats = dpo.tokenize_pairs(self.tokenizer, self.pairs.train,
                                                  max_seq_length=self.cfg.max_seq_length,
                                                  model=self.profile.name, **kwargs)
            self.eval_rows = (dpo.tokenize_pairs(self.tokenizer, self.pairs.heldout,
                                                 max_seq_length=self.cfg.max_seq_length,
                                                 model=self.profile.name, **kwargs)[0]
                              if self.pairs.heldout else [])
        self.record.update("data", {"tokens": stats})
        return stats

    def example_mask(self, index: int = 0) -> dict[str, Any]:
        """Which tokens the chosen and the rejected losses cover for one training pair (as TRL's
        collator batches it), and whether the chosen part is exactly what SFT trains."""
        if not self.rows:
            self.tokenize()
        out = dpo.pair_mask(self.tokenizer, self.rows, index, self.cfg.max_seq_length)
        kwargs = templates.with_thinking(self.tokenizer, self.profile.template_kwargs, self.thinking)
        out["chosen_same_as_sft"] = dpo.sft_agrees(self.tokenizer, self.pairs.train[index], self.rows,
                                                   index, **kwargs)
        return out

    # -- training ------------------------------------------------------------------------
    def train(self, *, live_plot: bool = True):
        if not self.rows:
            self.tokenize()
        if not hasattr(self.model, "peft_config"):
            self.add_lora()
        title = f"{self.profile.display_name}: DPO loss"
        live = plots.LiveLossPlot(title) if live_plot else None
        try:
            with self.record.phase("train"):
                self.result = dpo.train_dpo(self.model, self.tokenizer, self.rows, self.cfg, self.output_dir,
                                            settings=self.dpo, eval_rows=self.eval_rows or None, on_log=live)
        finally:
            if live:
                live.close()
        if not isinstance(self.record, _ReplicaRecord):
            save_dpo_plot(self.result.history, self.output_dir / "dpo.png", f"{self.profile.display_name} DPO")
        self.record.update("train", self.result.summary())
        self.record.data["loss_history"] = self.result.history
        for name in ("reward_accuracy", "reward_margin"):
            value = self.result.last(name)
            if value is not None:
                self.record.set_metric(name, value)
            if name in self.result.eval:
                self.record.set_metric(f"eval_{name}", self.result.eval[name])
        if self.result.diverged:
            log.error("%s", divergence.advice(self.result.diverged, self.result.learning_rate))
        return self.result

    def reward_plot(self):
        """The loss and the reward margin/accuracy per step (also saved as ``dpo.png``)."""
        return dpo_figure(self.result.history if self.result else [], f"{self.profile.display_name} DPO")

    def reward_table(self):
        """Reward accuracy and margin: first and last logged training step, and the held-out pairs."""
        import pandas as pd
        h = self.result.history if self.result else []
        rows = {}
        if h:
            rows["training pairs, first step"] = h[0]
            rows["training pairs, last step"] = h[-1]
        if self.result and self.result.eval:
            rows["held-out pairs, after training"] = self.result.eval
        cols = ["loss", "reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected"]
        return pd.DataFrame({k: {c: v.get(c) for c in cols} for k, v in rows.items()}).T

    def use(self, choice, cfg) -> None:
        """As :meth:`FineTuneRun.use`; the pairs go too, since a lighter model's answers differ."""
        super().use(choice, cfg)
        self.pairs, self.eval_rows = None, []
        self._record_settings()

    def train_with_fallback(self, questions: Sequence[str] = (), *, automatic: bool = True, on_step=None,
                            live_plot: bool = True, min_seq_length: int | None = None, general: bool = False):
        """Load, ask the base model the questions, make the pairs (the base model's answers), DPO,
        ask again; on out-of-memory at any step, down :func:`helpers.training.fallback.ladder`."""
        def attempt(rung):
            self.use(rung.choice, rung.cfg)
            with memory.stage("load"):
                self.load_model()
            with memory.stage("evaluate base"):
                self.measure("base", questions, general=general)
                self.make_pairs()
            with memory.stage("train"):
                self.tokenize()
                self.add_lora()
                result = self.train(live_plot=live_plot)
            with memory.stage("evaluate"):
                self.measure("tuned", questions, general=general)
            return result

        return fallback.run_with_fallback(self.choice, self.cfg, attempt, automatic=automatic,
                                          on_step=on_step, record=self.record, cleanup=self.free,
                                          min_seq_length=min_seq_length)
