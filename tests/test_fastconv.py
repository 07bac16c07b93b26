"""StemConv2d: the fast input gradient of one-channel stems equals nn.Conv2d's, in every place
a gradient is taken (attacks, training with input gradients, double backward, torch.func)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samplewise.attacks import pgd
from samplewise.data.cards import DatasetCard
from samplewise.models import StemConv2d, create_model, set_fast_input_grad

GEOMETRIES = [  # kernel, stride, padding, dilation, bias
    (3, 1, 1, 1, True), (3, 2, 1, 1, False), (5, 1, 2, 2, True), (4, 2, 0, 1, True), (1, 1, 0, 1, False)]


def pair(k, s, p, d, bias, dtype=torch.float64):
    torch.manual_seed(0)
    fast = StemConv2d(1, 5, k, stride=s, padding=p, dilation=d, bias=bias).to(dtype)
    plain = nn.Conv2d(1, 5, k, stride=s, padding=p, dilation=d, bias=bias).to(dtype)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("k,s,p,d,bias", GEOMETRIES)
def test_values_and_all_gradients_match_conv2d(k, s, p, d, bias):
    fast, plain = pair(k, s, p, d, bias)
    x = torch.rand(3, 1, 9, 11, dtype=torch.float64, requires_grad=True)
    y_fast, y_plain = fast(x), plain(x)
    assert type(y_fast.grad_fn).__name__ == "_AddInputGradBackward"  # the fast path ran
    torch.testing.assert_close(y_fast, y_plain, rtol=0, atol=0)
    w = torch.randn_like(y_plain)
    g_fast = torch.autograd.grad((y_fast * w).sum(), [x, *fast.parameters()])
    g_plain = torch.autograd.grad((y_plain * w).sum(), [x, *plain.parameters()])
    for a, b in zip(g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,d,bias", GEOMETRIES[:3])
def test_gradcheck_and_double_backward(k, s, p, d, bias):
    fast, _ = pair(k, s, p, d, bias)
    x = torch.rand(2, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fast, (x,))
    assert torch.autograd.gradgradcheck(fast, (x,))


def test_input_only_gradient_leaves_parameters_alone():
    fast, _ = pair(3, 1, 1, 1, True)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    torch.autograd.grad(fast(x).sum(), x)
    assert all(q.grad is None for q in fast.parameters())


def test_plain_path_when_no_input_gradient_autocast_or_func():
    fast, plain = pair(3, 1, 1, 1, True, torch.float32)
    x = torch.rand(2, 1, 8, 8)
    assert fast(x).grad_fn is not None and type(fast(x).grad_fn).__name__ == "ConvolutionBackward0"
    xr = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(fast(xr).grad_fn).__name__ != "_AddInputGradBackward"
    # per-sample input gradients through torch.func use the plain convolution and agree
    per_sample = torch.func.vmap(torch.func.grad(lambda xi: fast(xi[None]).square().sum()))(x)
    xr.grad = None
    plain(xr).square().sum().backward()
    torch.testing.assert_close(per_sample, xr.grad)


def test_only_one_channel_stems_take_the_fast_path():
    assert StemConv2d(1, 4, 3).fast_input_grad
    assert not StemConv2d(3, 4, 3).fast_input_grad
    assert not StemConv2d(1, 4, 3, padding="same").fast_input_grad
    assert not StemConv2d(1, 4, 3, padding=1, padding_mode="reflect").fast_input_grad


def card(channels):
    return DatasetCard(name="toy", num_classes=10, shape=(channels, 16, 16), mean=(0.5,) * channels,
                       std=(0.25,) * channels, eps=0.1, alpha=0.025, crop_pad=0, flip=False,
                       classes=tuple(f"c{i}" for i in range(10)))


@pytest.mark.parametrize("arch", ["cnn-small", "resnet18", "preact-resnet18", "mobilenetv2"])
def test_every_architecture_has_a_stem_and_the_switch_reaches_it(arch):
    model = create_model(arch, card(1))
    assert set_fast_input_grad(model, False) == 1
    assert not any(m.fast_input_grad for m in model.modules() if isinstance(m, StemConv2d))
    assert set_fast_input_grad(model, True) == 1
    assert set_fast_input_grad(create_model(arch, card(3)), True) == 0  # RGB: plain kernel


def test_wrn_stem():
    model = create_model("wrn", card(1), depth=10, widen_factor=1)
    assert set_fast_input_grad(model, True) == 1


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pgd_and_a_training_step_agree_with_the_plain_stem(layout):
    torch.manual_seed(1)
    fast = create_model("cnn-small", card(1)).to(memory_format=layout)
    plain = create_model("cnn-small", card(1)).to(memory_format=layout)
    plain.load_state_dict(fast.state_dict())
    set_fast_input_grad(plain, False)
    x = torch.rand(16, 1, 16, 16).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (16,))
    gens = [torch.Generator().manual_seed(3) for _ in range(2)]
    a = pgd(fast, x, y, eps=0.1, alpha=0.02, steps=5, generator=gens[0])
    b = pgd(plain, x, y, eps=0.1, alpha=0.02, steps=5, generator=gens[1])
    # sign steps: equal unless a float32 rounding difference flips a near-zero gradient
    assert (a - b).abs().gt(1e-6).float().mean() < 0.01
    # a training step with input gradients (online AIGN): weights and input gradients agree
    grads = []
    for m in (fast, plain):
        m.zero_grad()
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(m(xr), y).backward()
        grads.append([xr.grad, *[q.grad for q in m.parameters()]])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_state_dicts_are_those_of_plain_conv_layers():
    model = create_model("cnn-small", card(1))
    stem = next(m for m in model.modules() if isinstance(m, StemConv2d))
    assert set(stem.state_dict()) == {"weight", "bias"}
    plain = nn.Conv2d(1, stem.out_channels, 3, padding=1)
    plain.load_state_dict(stem.state_dict())  # checkpoints from before StemConv2d still load


def relu_first_features(net, x):
    """cnn-small's body in the textbook order (ReLU, then max-pool) from the same modules."""
    mods = list(net.body)
    out, i = x, 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.MaxPool2d) and isinstance(mods[i + 1], nn.ReLU):
            out = m(F.relu(out))   # old order: ReLU then pool; skip the ReLU after the pool
            i += 2
            continue
        out = m(out)
        i += 1
    return out


@pytest.mark.parametrize("bn,size", [(False, 16), (True, 16), (False, 8)])
def test_pool_before_relu_is_exactly_the_relu_first_network(bn, size):
    torch.manual_seed(2)
    c = card(1)
    c = DatasetCard(**{**c.__dict__, "shape": (1, size, size)}) if size != 16 else c
    model = create_model("cnn-small", c, bn=bn).double()
    set_fast_input_grad(model, False)
    model.train(bn)
    x = torch.rand(6, 1, size, size, dtype=torch.float64)
    x[:, :, : size // 2] = 0.0  # flat regions: tied windows and many non-positive maxima
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fa = model.net.forward_features(xa)
    fb = relu_first_features(model.net, xb)
    torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    w = torch.randn_like(fa)
    ga = torch.autograd.grad((fa * w).sum(), [xa, *model.net.body.parameters()])
    gb = torch.autograd.grad((fb * w).sum(), [xb, *model.net.body.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_compile_traces_the_stem():
    """The compile path (a CUDA flag here) through dynamo and AOT autograd on the CPU: the
    ``aot_eager`` backend needs no C++ compiler and gives the same gradients."""
    torch.manual_seed(5)
    fast = create_model("cnn-small", card(1))
    plain = create_model("cnn-small", card(1))
    plain.load_state_dict(fast.state_dict())
    set_fast_input_grad(plain, False)
    torch._dynamo.reset()
    compiled = torch.compile(fast, backend="aot_eager")
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ga = torch.autograd.grad(F.cross_entropy(compiled(xa), y), [xa, *fast.parameters()])
    gb = torch.autograd.grad(F.cross_entropy(plain(xb), y), [xb, *plain.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


def test_input_gradient_penalty_differentiates_through_the_weights():
    """create_graph: d/dW ||grad_x L||^2 (a gradient-norm penalty) matches nn.Conv2d's."""
    for fast_model in (pair(3, 1, 1, 1, True)[0], pair(3, 2, 1, 1, False)[0]):
        plain = nn.Conv2d(1, 5, fast_model.kernel_size, stride=fast_model.stride,
                          padding=fast_model.padding, bias=fast_model.bias is not None).double()
        plain.load_state_dict(fast_model.state_dict())
        x = torch.rand(3, 1, 9, 9, dtype=torch.float64)
        grads = []
        for m in (fast_model, plain):
            xr = x.clone().requires_grad_(True)
            loss = torch.tanh(m(xr)).square().sum()
            (gx,) = torch.autograd.grad(loss, xr, create_graph=True)
            penalty = gx.square().sum()
            grads.append(torch.autograd.grad(penalty, [*m.parameters()]))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
