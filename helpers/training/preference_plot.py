"""DPO's curves: the loss, and the reward margin and accuracy, per logged step."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from helpers.core.figures import _pyplot, save_figure


def dpo_figure(history: Sequence[dict], title: str = "DPO"):
    """Left: the DPO loss (0.693 = ln 2 where chosen and rejected are not told apart). Right: the
    reward margin (beta x how much more the tuned model prefers the chosen answer than the
    reference does) and the reward accuracy (share of pairs with a positive margin)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    steps = [h["step"] for h in history]
    if history:
        left.plot(steps, [h.get("loss") for h in history], marker="o", markersize=3)
        right.plot(steps, [h.get("reward_margin") for h in history], marker="o", markersize=3,
                   label="reward margin")
        acc = right.twinx()
        acc.plot(steps, [h.get("reward_accuracy") for h in history], color="tab:green", marker="s",
                 markersize=3, label="reward accuracy")
        acc.set_ylim(-0.05, 1.05)
        acc.set_ylabel("reward accuracy")
        right.legend(loc="upper left", fontsize=8)
        acc.legend(loc="lower right", fontsize=8)
    left.axhline(0.6931, color="grey", linewidth=0.8, linestyle="--")
    left.set_title(f"{title}: loss")
    right.set_title(f"{title}: rewards")
    for ax in (left, right):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    left.set_ylabel("DPO loss")
    right.set_ylabel("reward margin")
    fig.tight_layout()
    return fig


def save_dpo_plot(history: Sequence[dict], path: str | os.PathLike, title: str = "DPO") -> Path:
    return save_figure(dpo_figure(history, title), path)
