"""Models that take [0, 1] images: normalisation as buffers, creation by name, safe files.

A samplewise model file is a plain dict (tensors, strings, numbers, lists, dicts only), so that
``torch.load(path, weights_only=True)`` reads it::

    {"format": "samplewise.model/1", "arch": "cnn-small", "arch_kwargs": {...},
     "card": card.to_dict(), "state_dict": {...}, "extra": {...}}

Example:
    >>> model = create_model("cnn-small", card, width=2)
    >>> save_model("runs/a/model.pt", model, extra={"epoch": 10})
    >>> same = load_model("runs/a")            # a run directory means runs/a/model.pt
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import check_device
from ..data.cards import DatasetCard
from ..errors import SamplewiseError, check
from ..io import torch_load, torch_save
from .archs import MODELS
from .layout import choose_layout

log = logging.getLogger(__name__)

FORMAT = "samplewise.model/1"
EXTERNAL_ARCH = "external"
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class NormalizedModel(nn.Module):
    """An architecture behind ``(x - mean) / std``, so it takes images in [0, 1].

    Attributes:
        net: the architecture (``forward_features`` and a linear ``head``).
        arch: registered architecture name; arch_kwargs: the options it was built with.
        card: the :class:`DatasetCard` the model was built for (mean/std come from it).
        extra: plain metadata read from a model file (empty for a fresh model).

    Example:
        >>> model = NormalizedModel(MODELS.build("mlp", 1, 10, (8, 8)), card, arch="mlp")
        >>> model(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    #: its architectures never ``view`` a convolution's output, so it may run in NHWC
    #: (:func:`samplewise.models.layout.choose_layout`)
    nhwc_safe = True

    def __init__(self, net: nn.Module, card: DatasetCard, *, arch: str,
                 arch_kwargs: dict | None = None):
        super().__init__()
        self.net = net
        self.card = card
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        self.extra: dict = {}
        channels = card.shape[0]
        self.register_buffer("mean", _channel_stats(card.mean, channels, "mean"))
        self.register_buffer("std", _channel_stats(card.std, channels, "std"))
        check(bool((self.std > 0).all()), f"dataset card '{card.name}': std must be positive")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] images to the network's input space."""
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D) of [0, 1] images."""
        return self.net.forward_features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of [0, 1] images."""
        return self.net.head(self.features(x))

    @property
    def head(self) -> nn.Linear:
        """The linear classifier: ``head(features(x)) == forward(x)``."""
        return self.net.head

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, arch_kwargs={self.arch_kwargs}, card={self.card.name!r}"


class ExternalModel(nn.Module):
    """A foreign module that already takes [0, 1] images (e.g. a RobustBench model).

    Inference only: it exposes ``forward`` (logits) but no features or head, and the wrapped
    module always stays in eval mode (``train()`` only flips this wrapper's flag).
    """

    def __init__(self, module: nn.Module, card: DatasetCard | None, *, source: str = ""):
        super().__init__()
        try:
            module.eval()
        except NotImplementedError:  # torch.export modules are captured in eval mode already
            pass
        self.module = module
        self.card = card
        self.arch = EXTERNAL_ARCH
        self.arch_kwargs: dict = {}
        self.source = source
        self.extra: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def train(self, mode: bool = True) -> "ExternalModel":
        # Exported programs refuse .train()/.eval(); the inner module is frozen in eval anyway.
        self.training = mode
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise SamplewiseError(f"external model {self.source or ''} exposes logits only "
                              "(no penultimate features)")

    @property
    def head(self) -> nn.Module:
        raise SamplewiseError("external model exposes logits only (no linear head)")


def wrap_external(module: nn.Module, card: DatasetCard | None, *, source: str = "") -> ExternalModel:
    """Wrap a module that takes [0, 1] images so samplewise can use, save and load it.

    ``save_model`` stores it as a ``torch.export`` program (shape-checked on ``card.shape``
    with a dynamic batch size), which ``load_model`` reads back without the original code.

    Example:
        >>> teacher = wrap_external(robustbench_model, card, source="robustbench:Carmon2019Unlabeled")
        >>> save_model("teacher.pt", teacher)      # later: --teacher teacher.pt
    """
    check(isinstance(module, nn.Module), f"wrap_external needs an nn.Module, got {type(module)}")
    return ExternalModel(module, card, source=source)


def list_models() -> list[str]:
    """Registered architecture names (``timm:ARG`` is a prefix entry)."""
    return MODELS.names()


def create_model(name: str, card: DatasetCard, **arch_kwargs: Any) -> NormalizedModel:
    """Build architecture ``name`` for the images described by ``card``.

    Args:
        name: a registered name (see :func:`list_models`) or ``timm:NAME``.
        card: dataset card giving channels, image size, classes, mean and std.
        **arch_kwargs: architecture options, e.g. ``width=4`` for ``cnn-small``.

    Raises:
        SamplewiseError: unknown name, unknown option or bad option value.

    Example:
        >>> teacher = create_model("cnn-small", card, width=4)
    """
    entry, arg = MODELS.resolve(name)
    kwargs = _bind_kwargs(name, entry.obj, arg is not None, arch_kwargs)
    channels, height, width = card.shape
    args = (channels, card.num_classes, (height, width))
    net = entry.obj(arg, *args, **kwargs) if arg is not None else entry.obj(*args, **kwargs)
    check(isinstance(getattr(net, "head", None), nn.Linear) and hasattr(net, "forward_features"),
          f"model '{name}' has no linear classifier head; samplewise needs forward_features + "
          "a linear head")
    model = NormalizedModel(net, card, arch=name, arch_kwargs=kwargs)
    choose_layout(model)  # the run layout: NHWC for a conv net on the CPU (models/layout.py)
    return model


def _bind_kwargs(name: str, builder, is_prefix: bool, arch_kwargs: dict) -> dict:
    """Check options against the builder's signature; return them with defaults filled in."""
    params = list(inspect.signature(builder).parameters.values())[3 + int(is_prefix):]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    free = any(p.kind is p.VAR_KEYWORD for p in params)
    unknown = sorted(set(arch_kwargs) - set(named))
    if unknown and not free:
        valid = ", ".join(named) or "none"
        raise SamplewiseError(f"model '{name}' got unknown option(s) {', '.join(unknown)}; "
                              f"valid options: {valid}")
    kwargs = {k: p.default for k, p in named.items() if p.default is not inspect.Parameter.empty}
    kwargs.update(arch_kwargs)
    for key, value in kwargs.items():
        check(_is_plain(value), f"model option {key}={value!r} must be a plain value "
                                "(number, string, bool, list)")
    return kwargs


def _channel_stats(values, channels: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    check(t.numel() in (1, channels),
          f"dataset card {what} has {t.numel()} values for {channels} channels")
    return t.expand(channels).clone().view(1, channels, 1, 1)


def _is_plain(obj: Any) -> bool:
    if isinstance(obj, _PLAIN):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_is_plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in obj.items())
    return False


# ----------------------------------------------------------------------------- files

def model_payload(model: nn.Module, extra: dict | None = None) -> dict:
    """The plain dict a model file holds (loadable with ``weights_only=True``).

    Training checkpoints nest this dict under ``"model"``, so :func:`load_model` reads both.
    """
    extra = dict(extra or {})
    check(_is_plain(extra), "save_model: extra must hold only plain values (dict, list, str, "
                            "int, float, bool, None, tensors)")
    card = getattr(model, "card", None)
    if isinstance(model, ExternalModel):
        check(card is not None, "save_model: an external model needs a dataset card")
        state = {"exported_program": _export_bytes(model.module, card)}
        extra.setdefault("source", model.source)
    elif isinstance(model, NormalizedModel):
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        raise SamplewiseError(f"save_model needs a samplewise model (create_model or "
                              f"wrap_external), got {type(model).__name__}")
    return {"format": FORMAT, "arch": model.arch, "arch_kwargs": dict(model.arch_kwargs),
            "card": card.to_dict(), "state_dict": state, "extra": extra}


def save_model(path, model: nn.Module, extra: dict | None = None) -> None:
    """Write ``model`` atomically as a plain dict that loads with ``weights_only=True``.

    Args:
        path: target file (parent folders are created).
        model: a :class:`NormalizedModel` or an :class:`ExternalModel`.
        extra: plain metadata (numbers, strings, lists, dicts, tensors), e.g. the epoch.

    Example:
        >>> save_model(out_dir / "model.pt", model, extra={"epoch": 30, "robust_acc": 0.41})
    """
    torch_save(model_payload(model, extra), path)


def load_model(path_or_run_dir, device: str | torch.device = "cpu") -> nn.Module:
    """Read a model file (or ``DIR/model.pt`` of a run directory), in eval mode on ``device``.

    Also accepts a training checkpoint: a dict whose ``"model"`` entry is a model file dict.
    The loaded model carries the file's ``extra`` dict as ``model.extra``.

    Raises:
        SamplewiseError: missing, truncated or foreign file, or weights that do not fit the
            architecture the file names.

    Example:
        >>> model = load_model("runs/easycore-0.3", device="cpu")
    """
    check_device(str(device))  # before reading: "cuda" on a CPU machine is a user error
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / "model.pt"
    obj = torch_load(path, "model file")
    if (isinstance(obj, dict) and obj.get("format") != FORMAT
            and isinstance(obj.get("model"), dict) and "format" in obj["model"]):
        obj = obj["model"]  # a training checkpoint ("samplewise.checkpoint/1") holds the model
    _check_format(path, obj)
    try:
        card = DatasetCard.from_dict(obj["card"])
    except (TypeError, KeyError, ValueError, SamplewiseError) as exc:
        raise SamplewiseError(f"{path}: invalid dataset card in model file ({exc})") from None
    if obj["arch"] == EXTERNAL_ARCH:
        model = _load_external(path, obj, card)
    else:
        model = _load_normalized(path, obj, card)
    model.extra = dict(obj.get("extra") or {})
    log.debug("loaded %s model from %s", obj["arch"], path)
    model = model.to(device).eval()
    choose_layout(model)  # NHWC for a samplewise conv net on the CPU, NCHW on another device
    return model


def _check_format(path: Path, obj: Any) -> None:
    if not isinstance(obj, dict) or "format" not in obj:
        raise SamplewiseError(f"{path}: not a samplewise model file (no 'format' entry)")
    if obj["format"] != FORMAT:
        raise SamplewiseError(f"{path}: unsupported model file format {obj['format']!r} "
                              f"(this samplewise reads {FORMAT!r})")
    missing = [k for k in ("arch", "arch_kwargs", "card", "state_dict") if k not in obj]
    check(not missing, f"{path}: model file lacks {', '.join(missing)}")
    check(isinstance(obj["state_dict"], dict) and isinstance(obj["arch_kwargs"], dict),
          f"{path}: model file has a malformed state_dict or arch_kwargs")


def _load_normalized(path: Path, obj: dict, card: DatasetCard) -> NormalizedModel:
    arch, kwargs = obj["arch"], obj["arch_kwargs"]
    try:
        model = create_model(arch, card, **kwargs)
    except SamplewiseError as exc:
        raise SamplewiseError(f"{path}: cannot rebuild architecture '{arch}': {exc}") from None
    mismatch = _state_mismatch(model.state_dict(), obj["state_dict"])
    if mismatch:
        raise SamplewiseError(f"{path}: weights do not fit architecture '{arch}' {kwargs} "
                              f"named in the file: {mismatch}")
    model.load_state_dict(obj["state_dict"])
    return model


def _state_mismatch(expected: dict, found: dict) -> str:
    """One-line description of how ``found`` differs from ``expected`` ('' if it fits)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {_shape(found[k])} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in found
              and (not isinstance(found[k], torch.Tensor) or found[k].shape != v.shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (file vs model: {'; '.join(shapes[:3])})")
    return "; ".join(parts)


def _shape(value: Any) -> str:
    """A tensor's shape, or what a non-tensor entry of a damaged state_dict is."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    return f"({type(value).__name__}, not a tensor)"


def _export_bytes(module: nn.Module, card: DatasetCard) -> torch.Tensor:
    """Serialise ``module`` with ``torch.export`` (CPU copy, dynamic batch) as a uint8 tensor."""
    cpu = copy.deepcopy(module).cpu().eval()
    example = torch.rand(2, *card.shape)
    batch = torch.export.Dim.DYNAMIC
    try:
        program = torch.export.export(cpu, (example,), dynamic_shapes=({0: batch},))
        buf = io.BytesIO()
        torch.export.save(program, buf)
    except Exception as exc:  # torch.export raises many internal types for untraceable code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SamplewiseError(f"save_model: torch.export cannot capture this external model "
                              f"({first[:200]})") from None
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _load_external(path: Path, obj: dict, card: DatasetCard) -> ExternalModel:
    data = obj["state_dict"].get("exported_program")
    check(isinstance(data, torch.Tensor) and data.dtype == torch.uint8,
          f"{path}: external model file lacks its exported program")
    try:
        program = torch.export.load(io.BytesIO(data.numpy().tobytes()))
    except Exception as exc:  # a damaged archive can fail in many layers of torch.export
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SamplewiseError(f"{path}: cannot read the exported program ({first[:200]})") from None
    source = str((obj.get("extra") or {}).get("source", ""))
    return ExternalModel(program.module(), card, source=source)
