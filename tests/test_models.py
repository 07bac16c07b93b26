"""Tests for samplewise.models: every architecture, normalisation, model files and teachers."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from samplewise.data.cards import DatasetCard
from samplewise.errors import SamplewiseError
from samplewise.models import (MODELS, ExternalModel, NormalizedModel, create_model, freeze,
                               list_models, load_model, load_teacher, save_model, wrap_external)

HAS_TIMM = importlib.util.find_spec("timm") is not None


def make_card(channels=1, size=8, classes=10, mean=None, std=None, name="toy"):
    return DatasetCard(name=name, num_classes=classes, shape=(channels, size, size),
                       mean=tuple(mean or [0.5] * channels), std=tuple(std or [0.25] * channels),
                       eps=0.1, alpha=0.025, crop_pad=0, flip=False,
                       classes=tuple(f"c{i}" for i in range(classes)))


DIGITS = make_card(1, 8, 10, name="digits-like")
CIFAR = make_card(3, 32, 10, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], name="cifar-like")
TINY3 = make_card(3, 8, 10, name="tiny-rgb")

# Cheap options so the loop stays fast on two CPU cores; presets are checked on small images.
FAST_KWARGS = {"wrn": {"depth": 10, "widen_factor": 1}, "timm:resnet18": {}}
LIGHT = {"mlp", "cnn-small"}


def model_cases():
    cases = []
    for entry in MODELS.entries():
        if entry.prefix:
            name = "timm:resnet18"
            mark = [] if HAS_TIMM else [pytest.mark.skip(reason="timm is not installed, so "
                                                               "timm:NAME entries cannot build")]
            cases.append(pytest.param(name, CIFAR, id=f"{name}-cifar", marks=mark))
            continue
        if entry.name in LIGHT:
            cases.append(pytest.param(entry.name, DIGITS, id=f"{entry.name}-digits"))
        # WRN-34-10 has ~46M parameters: check it on 8x8 images (any size >= 8 must work).
        card = TINY3 if entry.name == "wrn-34-10" else CIFAR
        cases.append(pytest.param(entry.name, card, id=f"{entry.name}-{card.name}"))
    return cases


@pytest.mark.parametrize("name,card", model_cases())
def test_every_model_builds_backprops_and_splits_into_features_and_head(name, card):
    torch.manual_seed(0)
    model = create_model(name, card, **FAST_KWARGS.get(name, {}))
    assert isinstance(model, NormalizedModel) and model.arch == name and model.card == card
    assert isinstance(model.head, nn.Linear)
    if name == "wrn-34-10":  # the preset is the full-size WRN-34-10 (~46.2M parameters)
        assert 45.5e6 < sum(p.numel() for p in model.parameters()) < 46.5e6
        assert model.arch_kwargs == {"dropout": 0.0}
    x = torch.rand(2, *card.shape)
    y = torch.tensor([0, 1])

    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert logits.shape == (2, card.num_classes)
    assert feats.ndim == 2 and feats.shape[0] == 2 and feats.shape[1] == model.head.in_features
    torch.testing.assert_close(model.head(feats), logits)


@pytest.mark.parametrize("name", [n for n in MODELS.names(include_prefix=False)
                                  if n != "wrn-34-10"])
def test_models_accept_any_channel_count_and_small_non_square_images(name):
    card = DatasetCard("odd", 3, (2, 8, 12), (0.5, 0.5), (0.3, 0.3), 0.1, 0.02, 0, False,
                       ("a", "b", "c"))
    model = create_model(name, card, **FAST_KWARGS.get(name, {})).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 2, 8, 12)).shape == (1, 3)


def test_cnn_small_width_multiplier_makes_a_wider_model():
    narrow = create_model("cnn-small", DIGITS)
    wide = create_model("cnn-small", DIGITS, width=4)
    assert wide.head.in_features == 4 * narrow.head.in_features == 512


def test_normalisation_lives_inside_the_model():
    card = make_card(3, 16, 5, mean=[0.1, 0.5, 0.9], std=[0.2, 0.3, 0.4])
    model = create_model("cnn-small", card).eval()
    assert {"mean", "std"} <= set(model.state_dict())
    x = torch.rand(4, 3, 16, 16)
    m = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)
    s = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - m) / s))
        torch.testing.assert_close(model.features(x), model.net.forward_features((x - m) / s))


def _trained_bn_model(card=DIGITS):
    torch.manual_seed(1)
    model = create_model("cnn-small", card, width=0.5, bn=True)
    model.train()
    model(torch.rand(8, *card.shape))  # moves the BatchNorm running statistics off their init
    return model.eval()


def test_save_load_roundtrip_is_exact_and_plain(tmp_path):
    model = _trained_bn_model()
    path = tmp_path / "model.pt"
    save_model(path, model, extra={"epoch": 3, "acc": [0.5, 0.6]})

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "samplewise.model/1" and raw["arch"] == "cnn-small"
    assert raw["arch_kwargs"] == {"width": 0.5, "bn": True}
    assert raw["card"] == DIGITS.to_dict() and raw["extra"]["epoch"] == 3

    loaded = load_model(path)
    assert not loaded.training and loaded.arch == "cnn-small" and loaded.card == DIGITS
    assert loaded.extra == {"epoch": 3, "acc": [0.5, 0.6]}
    x = torch.rand(5, *DIGITS.shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_from_run_directory_and_training_checkpoint(tmp_path):
    model = _trained_bn_model()
    save_model(tmp_path / "run" / "model.pt", model)
    x = torch.rand(3, *DIGITS.shape)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "run")(x), model(x))

    # The training loop's checkpoint nests the model file dict under "model".
    inner = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    torch.save({"model": inner, "epoch": 4, "optimizer": {}}, tmp_path / "ckpt.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "ckpt.pt")(x), model(x))


def test_load_errors_are_samplewise_errors(tmp_path):
    with pytest.raises(SamplewiseError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(SamplewiseError, match="not found"):
        load_model(tmp_path)  # a directory without model.pt

    save_model(tmp_path / "model.pt", _trained_bn_model())
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SamplewiseError, match="cut.pt"):
        load_model(tmp_path / "cut.pt")

    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(SamplewiseError, match="not a samplewise model file"):
        load_model(tmp_path / "foreign.pt")


def test_weights_of_another_architecture_are_rejected(tmp_path):
    save_model(tmp_path / "mlp.pt", create_model("mlp", DIGITS))
    obj = torch.load(tmp_path / "mlp.pt", weights_only=True)
    obj["arch"], obj["arch_kwargs"] = "cnn-small", {}
    torch.save(obj, tmp_path / "lying.pt")
    with pytest.raises(SamplewiseError, match=r"architecture 'cnn-small'.*missing key"):
        load_model(tmp_path / "lying.pt")

    save_model(tmp_path / "wide.pt", create_model("cnn-small", DIGITS, width=2))
    obj = torch.load(tmp_path / "wide.pt", weights_only=True)
    obj["arch_kwargs"]["width"] = 1.0
    torch.save(obj, tmp_path / "narrow.pt")
    with pytest.raises(SamplewiseError, match="shape mismatch"):
        load_model(tmp_path / "narrow.pt")


def test_unknown_names_and_options_list_the_choices():
    with pytest.raises(SamplewiseError) as err:
        create_model("resnet1000", DIGITS)
    msg = str(err.value)
    assert "unknown model 'resnet1000'" in msg and "\n" not in msg
    assert all(n in msg for n in ("mlp", "cnn-small", "resnet18", "wrn-34-10", "mobilenetv2"))

    with pytest.raises(SamplewiseError, match=r"unknown option\(s\) depth; valid options: width, bn"):
        create_model("cnn-small", DIGITS, depth=3)
    with pytest.raises(SamplewiseError, match="6n\\+4"):
        create_model("wrn", CIFAR, depth=11)
    with pytest.raises(SamplewiseError, match="width"):
        create_model("cnn-small", DIGITS, width=-1)
    assert set(list_models()) >= {"mlp", "cnn-small", "resnet18", "preact-resnet18", "wrn",
                                  "wrn-34-10", "mobilenetv2", "timm:ARG"}


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed; the missing-timm message cannot occur")
def test_timm_entry_without_timm_says_how_to_install():
    with pytest.raises(SamplewiseError, match=r"timm is not installed; pip install 'samplewise\[timm\]'"):
        create_model("timm:resnet18", CIFAR)


def test_teacher_from_file_is_frozen_and_matches(tmp_path):
    model = _trained_bn_model()
    save_model(tmp_path / "t" / "model.pt", model)
    for spec in (str(tmp_path / "t" / "model.pt"), str(tmp_path / "t")):
        teacher = load_teacher(spec, card=DIGITS, device="cpu")
        assert not teacher.training
        assert not any(p.requires_grad for p in teacher.parameters())
        x = torch.rand(2, *DIGITS.shape)
        with torch.no_grad():
            assert torch.equal(teacher(x), model(x))

    with pytest.raises(SamplewiseError, match="teacher .* was built for"):
        load_teacher(str(tmp_path / "t"), card=make_card(1, 8, 3), device="cpu")
    with pytest.raises(SamplewiseError, match="teacher not found"):
        load_teacher(str(tmp_path / "nope.pt"), card=DIGITS, device="cpu")


def test_freeze_turns_off_gradients_and_training():
    model = freeze(create_model("mlp", DIGITS).train())
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_robustbench_missing_points_to_a_local_checkpoint(monkeypatch):
    # A None entry in sys.modules makes the import fail, whether or not robustbench is installed.
    monkeypatch.setitem(sys.modules, "robustbench", None)
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    for spec in ("robustbench:Carmon2019Unlabeled", "Carmon2019Unlabeled"):
        with pytest.raises(SamplewiseError, match="RobustBench is not installed") as err:
            load_teacher(spec, card=CIFAR, device="cpu")
        assert "local checkpoint" in str(err.value) and "--teacher" in str(err.value)


def _fake_robustbench(monkeypatch, loader):
    pkg, utils = types.ModuleType("robustbench"), types.ModuleType("robustbench.utils")
    utils.load_model = loader
    pkg.utils = utils
    monkeypatch.setitem(sys.modules, "robustbench", pkg)
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)


def test_robustbench_offline_download_failure_is_one_clear_error(monkeypatch, tmp_path):
    def offline(**kw):
        raise ConnectionError("Failed to resolve 'drive.google.com'\nmore lines")

    _fake_robustbench(monkeypatch, offline)
    with pytest.raises(SamplewiseError) as err:
        load_teacher("robustbench:Carmon2019Unlabeled", card=CIFAR, device="cpu",
                     model_dir=tmp_path)
    msg = str(err.value)
    assert "download failed" in msg and "local checkpoint" in msg and "\n" not in msg
    assert f"{tmp_path}/cifar-like/Linf/Carmon2019Unlabeled.pt" in msg


def test_robustbench_teacher_is_wrapped_frozen_and_saved_as_a_local_file(monkeypatch, tmp_path):
    calls = {}

    def fake_load(**kw):
        calls.update(kw)
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    _fake_robustbench(monkeypatch, fake_load)
    teacher = load_teacher("robustbench:Gowal2020Uncovering:cifar10:l2", card=CIFAR,
                           device="cpu", model_dir=tmp_path)
    assert calls == {"model_name": "Gowal2020Uncovering", "dataset": "cifar10",
                     "threat_model": "L2", "model_dir": str(tmp_path)}
    assert isinstance(teacher, ExternalModel) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())

    # Conversion for offline machines: wrap_external + save_model, then --teacher PATH.
    save_model(tmp_path / "teacher.pt", teacher)
    assert torch.load(tmp_path / "teacher.pt", weights_only=True)["arch"] == "external"
    reloaded = load_teacher(str(tmp_path / "teacher.pt"), card=CIFAR, device="cpu")
    for n in (1, 5):
        x = torch.rand(n, *CIFAR.shape)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(x), teacher(x))
    x = torch.rand(2, *CIFAR.shape, requires_grad=True)
    reloaded(x).sum().backward()  # attacks need input gradients through the teacher
    assert x.grad is not None and reloaded.train().module is not None


def test_wrap_external_rejects_non_modules():
    with pytest.raises(SamplewiseError, match="nn.Module"):
        wrap_external(lambda x: x, CIFAR)
