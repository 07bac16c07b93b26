"""samplewise.models.layout: the layout is chosen where a model is made or loaded (NHWC for a
samplewise conv net on the CPU) and by fit; attacks and evaluations run the model in the layout
it has, never converting it, and give the same answers in both layouts."""

from __future__ import annotations

import torch
from torch import nn

from samplewise.attacks import pgd
from samplewise.config import TrainConfig
from samplewise.data.cards import DatasetCard
from samplewise.evaluate import evaluate
from samplewise.models import create_model, load_model, load_teacher, save_model, wrap_external
from samplewise.models.layout import can_use_nhwc, choose_layout, is_nhwc
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


def test_created_and_loaded_models_are_nhwc_on_the_cpu(tmp_path):
    m = model()
    assert is_nhwc(m)                                   # chosen where the model is made
    save_model(tmp_path / "m.pt", m)
    assert is_nhwc(load_model(tmp_path / "m.pt"))
    assert is_nhwc(load_teacher(str(tmp_path / "m.pt"), card=CARD))
    assert not choose_layout(m, False) and not is_nhwc(m)   # NCHW on request, once
    assert choose_layout(m) and is_nhwc(m)                  # automatic: NHWC on the CPU


def test_pgd_runs_the_model_in_its_layout_and_both_layouts_agree():
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    params = list(m.parameters())
    seen = layouts_seen(m)
    x, y = batch()
    a = pgd(m, x, y, eps=0.1, alpha=0.02, steps=4, generator=torch.Generator().manual_seed(0))
    assert seen and all(seen) and is_nhwc(m)            # NHWC, and nothing converted it back
    assert all(p is q for p, q in zip(params, m.parameters()))
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    seen.clear()
    choose_layout(m, False)
    b = pgd(m, x, y, eps=0.1, alpha=0.02, steps=4, generator=torch.Generator().manual_seed(0))
    assert seen and not any(seen) and not is_nhwc(m)    # the attack left NCHW alone
    # same attack up to float rounding (a near-zero gradient may flip a sign step)
    assert (a - b).abs().gt(1e-6).float().mean() < 0.02
    assert (a - x).abs().max() <= 0.1 + 1e-6


def test_evaluate_gives_the_same_answers_in_both_layouts():
    from samplewise.data.cards import Split
    g = torch.Generator().manual_seed(3)
    split = Split(x=(torch.rand(40, *CARD.shape, generator=g) * 255).to(torch.uint8),
                  y=torch.randint(0, 10, (40,), generator=g), index=torch.arange(40))
    m = model()
    seen = layouts_seen(m)
    fast = evaluate(m, split, attack="pgd", steps=3, batch_size=16)
    assert seen and all(seen) and is_nhwc(m)
    seen.clear()
    choose_layout(m, False)
    plain = evaluate(m, split, attack="pgd", steps=3, batch_size=16)
    assert seen and not any(seen)
    assert fast["clean_acc"] == plain["clean_acc"]
    assert abs(fast["robust_acc"] - plain["robust_acc"]) <= 1 / 40


def test_what_is_left_alone():
    x, y = batch()
    ext = wrap_external(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10)), CARD)
    ext(x)
    assert not choose_layout(ext) and not is_nhwc(ext)  # external modules may view conv outputs
    mlp = create_model("mlp", CARD)
    assert not choose_layout(mlp)                       # no convolutions
    assert not can_use_nhwc(ext) and not can_use_nhwc(mlp) and can_use_nhwc(model())


def random_bundle(n: int, seed: int):
    """``n`` random images of CARD's shape with random labels, as train and test split."""
    from samplewise.data.cards import DataBundle, Split, fingerprint
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, *CARD.shape, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    split = Split(x=x, y=y, index=torch.arange(n))
    return DataBundle(card=CARD, train=split, test=split,
                      fingerprint=fingerprint(x.numpy(), y.numpy()))


def test_fit_trains_the_student_and_its_teacher_in_nhwc():
    bundle = random_bundle(64, seed=4)
    teacher, student = model(1, width=2).eval(), model(2)
    obj = build_objective("saad", eps=0.1, alpha=0.025, steps=2, teacher=teacher)
    seen = layouts_seen(student)
    fit(student, bundle, obj, TrainConfig(epochs=1, batch_size=32, eval_n=8, progress=False))
    assert seen and all(seen) and is_nhwc(student)
    assert is_nhwc(obj.teacher)


def test_fit_follows_channels_last_false_and_leaves_the_teacher_alone():
    bundle = random_bundle(32, seed=5)
    teacher, student = model(1, width=2).eval(), model(2)
    obj = build_objective("ard", eps=0.1, alpha=0.025, steps=1, teacher=teacher)
    fit(student, bundle, obj, TrainConfig(epochs=1, batch_size=32, eval_n=8, progress=False,
                                          channels_last=False))
    assert not is_nhwc(student) and is_nhwc(obj.teacher)  # fit set only its student's layout
