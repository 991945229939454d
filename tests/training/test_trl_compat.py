"""The torch path for TRL 1.15's fused LM head (helpers/trl_compat.py)."""

import pytest

torch = pytest.importorskip("torch")

from helpers.training import trl_compat  # noqa: E402

FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _case(n=37, h=16, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    bias = torch.randn(v, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, targets


def _reference(hidden, weight, bias, targets, temperature, softcap, scale):
    z = (hidden @ weight.t() + bias) * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    p = torch.softmax(z, -1)
    logp = torch.log_softmax(z, -1)
    return {"log_probs": logp[torch.arange(len(targets)), targets],
            "entropy": -(p * logp).sum(-1),
            "log_sum_sq_probs": torch.log((p * p).sum(-1)),
            "mean_logits": z.mean(-1),
            "is_top1": z.argmax(-1) == targets}


@pytest.mark.parametrize("temperature,softcap,scale", [(1.0, None, 1.0), (0.7, 30.0, 0.5)])
def test_outputs_and_gradients_match_a_direct_computation(temperature, softcap, scale, monkeypatch):
    monkeypatch.setattr(trl_compat, "TOKEN_BLOCK", 8)   # several blocks for 37 tokens
    hidden, weight, bias, targets = _case()
    got = dict(zip(FIELDS, trl_compat.TorchChunkedLogProb.apply(
        hidden, weight, bias, targets, temperature, 4096, softcap, scale, FIELDS)))
    want = _reference(hidden, weight, bias, targets, temperature, softcap, scale)
    for name in FIELDS:
        if name == "is_top1":
            assert torch.equal(got[name], want[name])
        else:
            assert torch.allclose(got[name], want[name], atol=1e-5), name
    g_got = torch.autograd.grad(got["log_probs"].sum(), (hidden, weight))
    g_want = torch.autograd.grad(want["log_probs"].sum(), (hidden, weight))
    for a, b in zip(g_got, g_want):
        assert torch.allclose(a, b, atol=1e-5)


def test_fields_not_asked_for_are_none_and_no_labels_gives_empty():
    hidden, weight, bias, targets = _case()
    out = trl_compat.TorchChunkedLogProb.apply(hidden, weight, None, targets, 1.0, 4096, None, 1.0,
                                               ("log_probs",))
    assert out[0].shape == (37,) and out[1:] == (None, None, None, None)
    empty = trl_compat.TorchChunkedLogProb.apply(hidden[:0], weight, None, targets[:0], 1.0, 4096,
                                                 None, 1.0, ("log_probs", "is_top1"))
    assert empty[0].shape == (0,) and empty[4].dtype == torch.bool


def test_only_releases_before_1_16_are_patched():
    assert trl_compat.needs_patch("1.15.0") and trl_compat.needs_patch("1.15.2")
    assert not trl_compat.needs_patch("1.16.0") and not trl_compat.needs_patch("2.0.0.dev0")


def test_accelerator_tensors_go_to_trls_kernel():
    calls = []

    class Kernel:
        @staticmethod
        def apply(hidden, *a, **k):
            calls.append(hidden.device.type)
            return "kernel"

    class OnCuda:   # a stand-in for a CUDA tensor: only .device.type is read before dispatch
        device = torch.device("cuda")

    d = trl_compat._Dispatch(Kernel)
    assert d.apply(OnCuda()) == "kernel" and calls == ["cuda"]
    hidden, weight, bias, targets = _case()
    assert d.apply(hidden, weight, bias, targets, 1.0, 4096)[0].shape == (37,)
    assert calls == ["cuda"]   # the CPU tensor never reached the kernel
    assert trl_compat._Dispatch(None).apply(hidden, weight, bias, targets, 1.0, 4096)[0].shape == (37,)


def test_agrees_with_trls_own_cpu_path_where_trl_has_one():
    trl = pytest.importorskip("trl")
    if trl_compat.needs_patch(trl.__version__):
        pytest.skip(f"trl {trl.__version__} has no CPU path to compare with")
    from trl.kernels import ChunkedLogProbFunction
    hidden, weight, bias, targets = _case()
    ours = trl_compat.TorchChunkedLogProb.apply(hidden, weight, bias, targets, 1.0, 16, None, 1.0,
                                                FIELDS)
    theirs = ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 1.0, 16, None, 1.0, FIELDS)
    for name, a, b in zip(FIELDS, ours, theirs):
        if name == "is_top1":
            assert torch.equal(a, b)
        else:
            assert torch.allclose(a, b.float(), atol=1e-4), name


def test_trl_1_15_trains_on_cpu_once_patched():
    trl = pytest.importorskip("trl")
    if not trl_compat.needs_patch(trl.__version__):
        pytest.skip("this trl trains on a CPU by itself")
    from trl.trainer import utils as trl_utils
    assert trl_compat.ensure_cpu_loss_head()
    assert isinstance(trl_utils._ChunkedLogProbFunction, trl_compat._Dispatch)
    assert trl_compat.ensure_cpu_loss_head()   # idempotent: no dispatch inside a dispatch
    assert not isinstance(trl_utils._ChunkedLogProbFunction.kernel, trl_compat._Dispatch)
