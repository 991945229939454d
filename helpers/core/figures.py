"""Loss curves: saved to disk, and redrawn live in a notebook while training runs."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib
    if "ipykernel" not in os.environ.get("MPLBACKEND", "") and not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def loss_figure(history: Sequence[dict], title: str = "Training loss"):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if history:
        steps = [h["step"] for h in history]
        ax.plot(steps, [h["loss"] for h in history], marker="o", markersize=3, linewidth=1.5)
        ax.set_xlim(left=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (trained tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder made) and close it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_loss_plot(history: Sequence[dict], path: str | os.PathLike, title: str = "Training loss") -> Path:
    return save_figure(loss_figure(history, title), path)


class LiveLossPlot:
    """Pass as ``on_log`` to :func:`helpers.train.train`: redraws the loss curve in place in a
    notebook (at most every ``every`` seconds); outside a notebook it does nothing. The last
    frame stays in the saved notebook."""

    def __init__(self, title: str = "Training loss", every: float = 2.0):
        self.title = title
        self.every = every
        self._last = 0.0
        self._handle = None
        self._history: Sequence[dict] = []

    def __call__(self, history: Sequence[dict]) -> None:
        self._history = history
        if not _in_notebook() or time.time() - self._last < self.every:
            return
        self._draw()

    def _draw(self) -> None:
        from IPython.display import display
        plt = _pyplot()
        fig = loss_figure(self._history, self.title)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
        self._last = time.time()

    def close(self) -> None:
        """Draw the final curve."""
        if _in_notebook() and self._history:
            self._draw()
