"""Architectures: every builder returns a module with ``forward_features(x) -> (B, D)`` and a
linear ``head``, so that ``logits = head(forward_features(x))``.

Builders are registered in :data:`MODELS` and called as
``builder(in_channels, num_classes, input_size, **arch_kwargs)`` with ``input_size = (H, W)``.
They see *normalised* inputs: :class:`samplewise.models.NormalizedModel` subtracts the dataset
mean and divides by the std before calling them.

Example:
    >>> net = MODELS.build("cnn-small", 1, 10, (8, 8), width=2)
    >>> net.head(net.forward_features(torch.zeros(2, 1, 8, 8))).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SamplewiseError, check
from ..registry import Registry
from .fastconv import StemConv2d

MODELS = Registry("model")


class Backbone(nn.Module):
    """Base class: ``forward(x) = head(forward_features(x))``; ``num_features`` is D."""

    head: nn.Linear
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _conv3x3(cin: int, cout: int, stride: int = 1, stem: bool = False) -> nn.Conv2d:
    return (StemConv2d if stem else nn.Conv2d)(cin, cout, 3, stride=stride, padding=1, bias=False)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_float(name: str, value) -> float:
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
          f"{name} must be a positive number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- small models

class MLP(Backbone):
    """Flatten, then ``depth`` blocks of Linear-ReLU of width ``hidden``."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register("mlp", help="multi-layer perceptron on flattened pixels (hidden=256, depth=2)")
def mlp(in_channels: int, num_classes: int, input_size: Sequence[int], hidden: int = 256,
        depth: int = 2) -> MLP:
    """Multi-layer perceptron; ``depth`` hidden layers of ``hidden`` units."""
    _positive_int("hidden", hidden)
    _positive_int("depth", depth)
    h, w = input_size
    return MLP(in_channels * h * w, num_classes, hidden, depth)


class SmallCNN(Backbone):
    """conv(32w)-ReLU-[pool]-conv(64w)-ReLU-pool-conv(128w)-ReLU-global average pool.

    The first max-pool is only used for inputs of 16 pixels or more, so 8x8 digits keep their
    resolution while 28x28 images are cheap enough for CPU training.

    A pooled block runs max-pool *before* its ReLU: ``relu(maxpool(z)) == maxpool(relu(z))``
    exactly (ReLU is monotone), and the gradients are equal too (both reach the window's first
    maximum when it is positive, nothing otherwise), but the ReLU and its backward then touch a
    quarter of the elements. ``state_dict`` keys are those of the ReLU-first order.
    """

    def __init__(self, in_channels: int, num_classes: int, input_size: Sequence[int],
                 width: float = 1.0, bn: bool = False):
        super().__init__()
        c1, c2, c3 = (max(1, round(c * width)) for c in (32, 64, 128))

        def block(cin: int, cout: int, pool: bool, stem: bool = False) -> list[nn.Module]:
            conv = (StemConv2d if stem else nn.Conv2d)(cin, cout, 3, padding=1, bias=not bn)
            return [conv] + ([nn.BatchNorm2d(cout)] if bn else []) + \
                ([nn.MaxPool2d(2)] if pool else []) + [nn.ReLU(inplace=True)]

        layers = block(in_channels, c1, pool=min(input_size) >= 16, stem=True)
        layers += block(c1, c2, pool=True) + block(c2, c3, pool=False)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.num_features = c3
        self.head = nn.Linear(c3, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register("cnn-small", help="3-conv CNN for 8x8 and 28x28 images (width multiplier, bn)")
def cnn_small(in_channels: int, num_classes: int, input_size: Sequence[int], width: float = 1.0,
              bn: bool = False) -> SmallCNN:
    """Small CNN; ``width=4`` gives the wide teacher used for the small datasets."""
    check(isinstance(bn, bool), f"bn must be true or false, got {bn!r}")
    return SmallCNN(in_channels, num_classes, input_size, _positive_float("width", width), bn)


# ----------------------------------------------------------------------------- ResNets

class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): conv-BN-ReLU-conv-BN plus shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): BN-ReLU-conv-BN-ReLU-conv plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3x3(cout, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut reads the pre-activated input, as in the reference design.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(Backbone):
    """CIFAR-style ResNet: 3x3 stem without max-pool, four stages, global average pool."""

    def __init__(self, in_channels: int, num_classes: int, blocks: Sequence[int],
                 preact: bool = False):
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        self.preact = preact
        self.conv1 = _conv3x3(in_channels, 64, stem=True)
        self.bn1 = None if preact else nn.BatchNorm2d(64)
        stages, cin = [], 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512))):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            stage = []
            for s in strides:
                stage.append(block(cin, cout, s))
                cin = cout
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn_final = nn.BatchNorm2d(cin) if preact else None
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.bn1 is not None:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.bn_final is not None:
            out = F.relu(self.bn_final(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@MODELS.register("resnet18", help="CIFAR-style ResNet-18 (3x3 stem, no max-pool)")
def resnet18(in_channels: int, num_classes: int, input_size: Sequence[int]) -> ResNet:
    """ResNet-18 with BasicBlocks [2, 2, 2, 2]."""
    return ResNet(in_channels, num_classes, (2, 2, 2, 2))


@MODELS.register("preact-resnet18", help="CIFAR-style pre-activation ResNet-18")
def preact_resnet18(in_channels: int, num_classes: int, input_size: Sequence[int]) -> ResNet:
    """Pre-activation ResNet-18 with blocks [2, 2, 2, 2]."""
    return ResNet(in_channels, num_classes, (2, 2, 2, 2), preact=True)


# ----------------------------------------------------------------------------- Wide ResNet

class WideBlock(nn.Module):
    """Wide ResNet block (Zagoruyko & Komodakis 2016): BN-ReLU-conv-BN-ReLU-dropout-conv."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3x3(cout, cout)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(Backbone):
    """WRN-depth-k: 3 groups of (depth-4)/6 wide blocks with widths 16k, 32k, 64k."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen_factor: int,
                 dropout: float):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = _conv3x3(in_channels, widths[0], stem=True)
        groups, cin = [], widths[0]
        for i, cout in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            groups.append(nn.Sequential(*[WideBlock(cin if j == 0 else cout, cout,
                                                    stride if j == 0 else 1, dropout)
                                          for j in range(n)]))
            cin = cout
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(cin)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@MODELS.register("wrn", help="Wide ResNet (depth=28, widen_factor=10, dropout=0.0)")
def wrn(in_channels: int, num_classes: int, input_size: Sequence[int], depth: int = 28,
        widen_factor: int = 10, dropout: float = 0.0) -> WideResNet:
    """Wide ResNet; ``depth`` must be 6n+4."""
    _positive_int("depth", depth, 10)
    check((depth - 4) % 6 == 0, f"wrn depth must be 6n+4 (10, 16, 22, 28, 34, ...), got {depth}")
    _positive_int("widen_factor", widen_factor)
    check(isinstance(dropout, (int, float)) and 0 <= dropout < 1,
          f"dropout must be in [0, 1), got {dropout!r}")
    return WideResNet(in_channels, num_classes, depth, widen_factor, float(dropout))


@MODELS.register("wrn-34-10", help="Wide ResNet-34-10 (~46M parameters)")
def wrn_34_10(in_channels: int, num_classes: int, input_size: Sequence[int],
              dropout: float = 0.0) -> WideResNet:
    """The WRN-34-10 commonly used in adversarial training papers."""
    return wrn(in_channels, num_classes, input_size, depth=34, widen_factor=10, dropout=dropout)


# ----------------------------------------------------------------------------- MobileNetV2

class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018): expand 1x1, depthwise 3x3, linear project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


# (expansion t, channels c, repeats n, stride s); CIFAR variant: stride 1 in the 24-channel stage.
_MOBILENET_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(Backbone):
    """CIFAR MobileNetV2: stride-1 stem, 1280-channel last conv, global average pool."""

    def __init__(self, in_channels: int, num_classes: int, width_mult: float = 1.0):
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(round(c * width_mult / 8)) * 8)

        cin = ch(32)
        layers: list[nn.Module] = [StemConv2d(in_channels, cin, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
        for t, c, n, s in _MOBILENET_CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        last = max(1280, ch(1280))
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last),
                   nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = last
        self.head = nn.Linear(last, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)


@MODELS.register("mobilenetv2", help="CIFAR MobileNetV2 (stride-1 stem; width_mult=1.0)")
def mobilenetv2(in_channels: int, num_classes: int, input_size: Sequence[int],
                width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 adapted to small images."""
    return MobileNetV2(in_channels, num_classes, _positive_float("width_mult", width_mult))


# ----------------------------------------------------------------------------- timm

class TimmNet(Backbone):
    """A timm model seen through the samplewise interface (pooled features + linear head)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = int(getattr(model, "num_features", 0))

    @property
    def head(self) -> nn.Module:  # type: ignore[override]
        # A property, not a submodule, so the classifier appears once in the state dict.
        return self.model.get_classifier()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


@MODELS.register("timm", prefix=True, help="any timm model, e.g. timm:resnet50 (needs timm)")
def timm_model(name: str, in_channels: int, num_classes: int, input_size: Sequence[int],
               **kwargs) -> TimmNet:
    """``timm.create_model(name, pretrained=False, ...)``; extra kwargs go to timm."""
    try:
        import timm
    except ImportError:
        raise SamplewiseError("timm is not installed; pip install 'samplewise[timm]'") from None
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=in_channels, **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SamplewiseError(f"timm could not build '{name}': {first[:200]}") from None
    return TimmNet(model)
