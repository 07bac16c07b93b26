"""Every loss in samplewise.losses against an independent, explicit computation (numpy loops)."""

import math

import numpy as np
import pytest
import torch

from samplewise import losses
from samplewise.errors import SamplewiseError

REDUCTIONS = ("none", "mean", "sum")
B, K = 7, 5


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(123)
    z = torch.randn(B, K, generator=g, dtype=torch.float64) * 3
    t = torch.randn(B, K, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, K, (B,), generator=g)
    return z, t, y


def _softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def _reduce_np(values, reduction):
    values = np.asarray(values, dtype=np.float64)
    return {"none": values, "mean": values.mean(), "sum": values.sum()}[reduction]


def _close(actual, expected, tol=1e-10):
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=tol, atol=tol)


def _ref_ce(z, y):
    return [-math.log(_softmax(z[i])[y[i]]) for i in range(len(y))]


def _ref_kl(t, z, temp=1.0):
    out = []
    for i in range(len(z)):
        p, q = _softmax(t[i] / temp), _softmax(z[i] / temp)
        out.append(sum(p[c] * math.log(p[c] / q[c]) for c in range(len(p))))
    return out


def _ref_cw(z, y):
    return [max(z[i][j] for j in range(len(z[i])) if j != y[i]) - z[i][y[i]] for i in range(len(y))]


def _ref_dlr(z, y):
    out = []
    for i in range(len(y)):
        s = sorted(z[i], reverse=True)
        other = max(z[i][j] for j in range(len(z[i])) if j != y[i])
        out.append(-(z[i][y[i]] - other) / (s[0] - s[2] + 1e-12))
    return out


def _ref_mart(zc, za, y, beta):
    out = []
    for i in range(len(y)):
        pa, pc = _softmax(za[i]), _softmax(zc[i])
        other = max(pa[j] for j in range(len(pa)) if j != y[i])
        bce = -math.log(pa[y[i]]) - math.log(1 - other)
        klv = sum(pc[c] * math.log(pc[c] / pa[c]) for c in range(len(pc)))
        out.append(bce + beta * klv * (1 - pc[y[i]]))
    return out


def _ref_renyi(p, gamma):
    out = []
    for row in p:
        if gamma == 1:
            out.append(-sum(v * math.log(v) for v in row if v > 0))
        else:
            out.append(math.log(sum(v ** gamma for v in row)) / (1 - gamma))
    return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce(data, reduction):
    z, _, y = data
    _close(losses.ce(z, y, reduction=reduction), _reduce_np(_ref_ce(z.numpy(), y.numpy()), reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl(data, reduction, temperature):
    z, t, _ = data
    expected = _reduce_np(_ref_kl(t.numpy(), z.numpy(), temperature), reduction)
    _close(losses.kl(t, z, temperature=temperature, reduction=reduction), expected)
    probs = torch.softmax(t / temperature, dim=1)
    _close(losses.kl_probs(probs, z, temperature=temperature, reduction=reduction), expected)


def test_kl_argument_order_and_zero(data):
    z, t, _ = data
    assert not torch.allclose(losses.kl(t, z, reduction="none"), losses.kl(z, t, reduction="none"))
    assert torch.all(losses.kl(t, z, reduction="none") > 0)
    _close(losses.kl(z, z, reduction="none"), np.zeros(B), tol=1e-12)
    # a one-hot target (zeros in p) is fine for kl_probs: KL = -log q_y
    onehot = torch.nn.functional.one_hot(torch.arange(B) % K, K).double()
    _close(losses.kl_probs(onehot, z, reduction="none"),
           np.array(_ref_ce(z.numpy(), (torch.arange(B) % K).numpy())))


def test_kl_nonnegative_on_many_pairs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 10, generator=g) * 5, torch.randn(200, 10, generator=g) * 5
    assert losses.kl(a, b, reduction="none").min() >= -1e-6


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_trades_kl(data, reduction):
    z, t, _ = data
    _close(losses.trades_kl(t, z, reduction=reduction), _reduce_np(_ref_kl(t.numpy(), z.numpy()), reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cw_margin(data, reduction):
    z, _, y = data
    _close(losses.cw_margin(z, y, reduction=reduction), _reduce_np(_ref_cw(z.numpy(), y.numpy()), reduction))
    # positive exactly on the misclassified samples
    per = losses.cw_margin(z, y, reduction="none")
    assert torch.equal(per > 0, z.argmax(1) != y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dlr(data, reduction):
    z, _, y = data
    _close(losses.dlr(z, y, reduction=reduction), _reduce_np(_ref_dlr(z.numpy(), y.numpy()), reduction))
    # shift and scale invariance
    _close(losses.dlr(3 * z + 2, y, reduction="none"), losses.dlr(z, y, reduction="none").numpy(), 1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mart(data, reduction):
    z, t, y = data
    expected = _reduce_np(_ref_mart(t.numpy(), z.numpy(), y.numpy(), 6.0), reduction)
    _close(losses.mart_loss(t, z, y, beta=6.0, reduction=reduction), expected)
    # beta = 0 leaves the boosted cross-entropy only
    _close(losses.mart_loss(t, z, y, beta=0.0, reduction=reduction),
           _reduce_np(_ref_mart(t.numpy(), z.numpy(), y.numpy(), 0.0), reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.5])
def test_renyi(data, reduction, gamma):
    z, _, _ = data
    p = torch.softmax(z, dim=1)
    _close(losses.renyi_entropy(p, gamma, reduction=reduction),
           _reduce_np(_ref_renyi(p.numpy(), gamma), reduction), 1e-9)


def test_renyi_limits(data):
    z, _, _ = data
    p = torch.softmax(z, dim=1)
    shannon = losses.renyi_entropy(p, 1.0, reduction="none")
    for gamma in (1 - 1e-4, 1 + 1e-4):
        torch.testing.assert_close(losses.renyi_entropy(p, gamma, reduction="none"), shannon,
                                   rtol=1e-3, atol=1e-3)
    # non-increasing in gamma; uniform -> log K for every order; inf -> min-entropy
    orders = [0.0, 0.5, 1.0, 2.0, 5.0, math.inf]
    values = torch.stack([losses.renyi_entropy(p, g, reduction="none") for g in orders])
    assert torch.all(values[1:] <= values[:-1] + 1e-12)
    _close(values[-1], (-torch.log(p.max(1).values)).numpy())
    uniform = torch.full((2, K), 1.0 / K, dtype=torch.float64)
    for gamma in orders:
        _close(losses.renyi_entropy(uniform, gamma, reduction="none"), np.full(2, math.log(K)), 1e-12)


def test_gradients_flow_through_losses(data):
    z, t, y = data
    z = z.clone().requires_grad_(True)
    for value in (losses.ce(z, y), losses.kl(t, z), losses.cw_margin(z, y), losses.dlr(z, y),
                  losses.mart_loss(t, z, y)):
        grad, = torch.autograd.grad(value, z)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_values(data):
    z, t, y = data
    with pytest.raises(SamplewiseError, match="unknown reduction"):
        losses.ce(z, y, reduction="batchmean")
    with pytest.raises(SamplewiseError, match="temperature"):
        losses.kl(t, z, temperature=0.0)
    with pytest.raises(SamplewiseError, match="shapes differ"):
        losses.kl(t[:, :3], z)
    with pytest.raises(SamplewiseError, match="labels"):
        losses.ce(z, y[:3])
    with pytest.raises(SamplewiseError, match="3 classes"):
        losses.dlr(z[:, :2], torch.zeros(B, dtype=torch.long))
    with pytest.raises(SamplewiseError, match="gamma"):
        losses.renyi_entropy(torch.softmax(z, 1), -1.0)
