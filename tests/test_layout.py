"""samplewise.models.layout: attacks and evaluations run samplewise conv nets in NHWC on the CPU,
give the same answers as in NCHW, and hand the model back in the layout it came in."""

from __future__ import annotations

import torch
from torch import nn

from samplewise.attacks import pgd
from samplewise.config import TrainConfig
from samplewise.data.cards import DatasetCard
from samplewise.evaluate import evaluate
from samplewise.models import create_model, wrap_external
from samplewise.models.layout import fast_layout, is_nhwc, keep_layout, wants_nhwc
from samplewise.objectives import build_objective
from samplewise.train import fit

CARD = DatasetCard(name="toy", num_classes=10, shape=(3, 12, 12), mean=(0.5,) * 3,
                   std=(0.25,) * 3, eps=0.1, alpha=0.025, crop_pad=0, flip=False,
                   classes=tuple(f"c{i}" for i in range(10)))


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("cnn-small", CARD, **kw)


def layouts_seen(m: nn.Module) -> list[bool]:
    """Record, at every forward, whether the model's convolutions were NHWC."""
    seen: list[bool] = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(is_nhwc(mod)))
    return seen


def batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *CARD.shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_pgd_runs_nhwc_and_restores_the_model():
    m = model()
    params = [p for p in m.parameters()]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    seen = layouts_seen(m)
    x, y = batch()
    assert not is_nhwc(m) and wants_nhwc(m)
    a = pgd(m, x, y, eps=0.1, alpha=0.02, steps=4, generator=torch.Generator().manual_seed(0))
    assert seen and all(seen)                            # every attack forward ran in NHWC
    assert not is_nhwc(m) and all(p.is_contiguous() for p in m.parameters())
    assert all(p is q for p, q in zip(params, m.parameters()))   # same parameter objects
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    seen.clear()
    with keep_layout():
        b = pgd(m, x, y, eps=0.1, alpha=0.02, steps=4, generator=torch.Generator().manual_seed(0))
    assert seen and not any(seen)
    # same attack up to float rounding (a near-zero gradient may flip a sign step)
    assert (a - b).abs().gt(1e-6).float().mean() < 0.02
    assert (a - x).abs().max() <= 0.1 + 1e-6


def test_evaluate_converts_once_and_matches_nchw():
    from samplewise.data.cards import Split
    g = torch.Generator().manual_seed(3)
    split = Split(x=(torch.rand(40, *CARD.shape, generator=g) * 255).to(torch.uint8),
                  y=torch.randint(0, 10, (40,), generator=g), index=torch.arange(40))
    m = model()
    seen = layouts_seen(m)
    fast = evaluate(m, split, attack="pgd", steps=3, batch_size=16)
    assert seen and all(seen) and not is_nhwc(m)
    with keep_layout():
        plain = evaluate(m, split, attack="pgd", steps=3, batch_size=16)
    assert fast["clean_acc"] == plain["clean_acc"]
    assert abs(fast["robust_acc"] - plain["robust_acc"]) <= 1 / 40


def test_nested_blocks_convert_once():
    m = model()
    calls = []
    real_to = m.to
    m.to = lambda *a, **k: (calls.append(k.get("memory_format")), real_to(*a, **k))[1]
    x, y = batch()
    with fast_layout(m) as converted:
        assert converted and is_nhwc(m)
        pgd(m, x, y, eps=0.1, steps=2)
        with fast_layout(m) as again:
            assert not again
    assert calls == [torch.channels_last, torch.contiguous_format]


def test_what_is_left_alone():
    x, y = batch()
    ext = wrap_external(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10)), CARD)
    ext(x)
    assert not wants_nhwc(ext)                 # external modules may view conv outputs
    mlp = create_model("mlp", CARD)
    assert not wants_nhwc(mlp)                 # no convolutions
    m = model()
    with keep_layout():
        assert not wants_nhwc(m)
    m.to(memory_format=torch.channels_last)
    assert is_nhwc(m) and not wants_nhwc(m)    # already NHWC: kept (and not converted back)
    pgd(m, x, y, eps=0.1, steps=1)
    assert is_nhwc(m)


def test_fit_trains_the_student_and_its_teacher_in_nhwc():
    from samplewise.data.cards import DataBundle, Split, fingerprint
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(64, *CARD.shape, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (64,), generator=g)
    split = Split(x=x, y=y, index=torch.arange(64))
    bundle = DataBundle(card=CARD, train=split, test=split,
                        fingerprint=fingerprint(x.numpy(), y.numpy()))
    teacher, student = model(1, width=2).eval(), model(2)
    obj = build_objective("saad", eps=0.1, alpha=0.025, steps=2, teacher=teacher)
    seen = layouts_seen(student)
    fit(student, bundle, obj, TrainConfig(epochs=1, batch_size=32, eval_n=8, progress=False))
    assert seen and all(seen) and is_nhwc(student)
    assert is_nhwc(obj.teacher)
