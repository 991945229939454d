"""TRL 1.15 on a CPU: a plain-torch stand-in for its fused LM-head kernel.

The GPU install is pinned by Unsloth 2026.10.9 to ``trl<=1.15.0``. TRL 1.15's ``SFTTrainer``
always patches the model with a fused LM head (``trl.trainer.utils.add_fused_lm_head``) whose
per-token log-probabilities come from ``ChunkedLogProbFunction`` in ``trl/kernels``: Triton
kernels, imported in a ``try`` that leaves ``trl.trainer.utils._ChunkedLogProbFunction = None``
where Triton is missing (PyTorch's CPU builds ship without it). Training on a CPU then stops at
the first step with ``AttributeError: 'NoneType' object has no attribute 'apply'``; and with
Triton installed, the kernels would still be launched on CPU tensors, which Triton cannot run.
TRL 1.16 added a torch path of its own.

:func:`ensure_cpu_loss_head` fills that gap without forking TRL: for TRL releases before 1.16 it
replaces the module attribute with :class:`TorchChunkedLogProb`, which computes the same five
outputs (per-token log-probability of the label, entropy, log of the summed squared
probabilities, mean logit, whether the label is the first argmax) in float32 with ordinary
autograd, a block of tokens at a time, and hands CUDA/XPU tensors to TRL's kernel when it
imported. Later TRL releases are left alone.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: tokens projected through the LM head at once (bounds the float32 logits held per block)
TOKEN_BLOCK = 256
FIXED_IN = (1, 16)   # the first TRL release with a CPU path of its own


def _transform(z, logit_scale: float, softcap: float | None, temperature: float):
    """TRL's ``_transform``: scale, optional tanh soft-cap, then temperature."""
    import torch
    z = z * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z / temperature


class TorchChunkedLogProb:
    """Same call and outputs as TRL 1.15's ``ChunkedLogProbFunction.apply``, in plain torch."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature: float, chunk_size: int,
              final_logit_softcapping: float | None = None, logit_scale: float = 1.0,
              outputs: tuple[str, ...] = ("log_probs",)):
        import torch
        logit_scale = 1.0 if logit_scale is None else logit_scale
        pieces: dict[str, list] = {k: [] for k in ("log_probs", "entropy", "log_sum_sq_probs",
                                                  "mean_logits", "is_top1")}
        for start in range(0, hidden.shape[0], TOKEN_BLOCK):
            h = hidden[start:start + TOKEN_BLOCK].float()
            t = targets[start:start + TOKEN_BLOCK]
            z = h @ weight.float().t()
            if bias is not None:
                z = z + bias.float()
            z = _transform(z, logit_scale, final_logit_softcapping, temperature)
            logp = torch.log_softmax(z, dim=-1)
            pieces["log_probs"].append(logp.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            if "entropy" in outputs:
                pieces["entropy"].append(-(logp.exp() * logp).sum(-1))
            with torch.no_grad():
                if "log_sum_sq_probs" in outputs:
                    pieces["log_sum_sq_probs"].append(torch.logsumexp(2 * logp, dim=-1))
                if "mean_logits" in outputs:
                    pieces["mean_logits"].append(z.mean(-1))
                if "is_top1" in outputs:  # the label is the first index holding the maximum
                    pieces["is_top1"].append(z.argmax(-1) == t)
        def joined(name):
            if name != "log_probs" and name not in outputs:
                return None
            if not pieces[name]:   # no label in the batch
                dtype = torch.bool if name == "is_top1" else torch.float32
                return hidden.new_zeros((0,), dtype=dtype)
            return torch.cat(pieces[name])
        return tuple(joined(k) for k in ("log_probs", "entropy", "log_sum_sq_probs",
                                         "mean_logits", "is_top1"))


class _Dispatch:
    """TRL's kernel for accelerator tensors when it imported, ours otherwise."""

    def __init__(self, kernel):
        self.kernel = kernel

    def apply(self, hidden, *args, **kwargs):
        if self.kernel is not None and hidden.device.type in ("cuda", "xpu"):
            return self.kernel.apply(hidden, *args, **kwargs)
        return TorchChunkedLogProb.apply(hidden, *args, **kwargs)


def needs_patch(version: str) -> bool:
    """Whether this TRL release lacks a CPU path for its fused LM head."""
    from packaging.version import Version
    return Version(version).release[:2] < FIXED_IN


def ensure_cpu_loss_head() -> bool:
    """Give TRL < 1.16 a torch path for its fused LM head; True when a patch is in place."""
    import trl
    if not needs_patch(trl.__version__):
        return False
    from trl.trainer import utils as trl_utils
    current = getattr(trl_utils, "_ChunkedLogProbFunction", "missing")
    if current == "missing":   # a layout this module does not know: leave TRL as it is
        log.warning("trl %s has no trl.trainer.utils._ChunkedLogProbFunction; the CPU loss "
                    "head was not installed", trl.__version__)
        return False
    if isinstance(current, _Dispatch):
        return True
    trl_utils._ChunkedLogProbFunction = _Dispatch(current)
    log.debug("trl %s: fused LM head gets a torch path for CPU tensors", trl.__version__)
    return True
