"""Architectures, normalised models, model files and teachers.

Models take images in [0, 1]: :class:`NormalizedModel` holds the dataset mean and std as
buffers. Architectures are registered in :data:`MODELS` (``list_models()``).

Example:
    >>> from samplewise.models import create_model, save_model, load_model
    >>> model = create_model("cnn-small", card)
    >>> save_model("run/model.pt", model)
    >>> model = load_model("run")
"""

from .archs import MODELS, Backbone
from .core import (ExternalModel, NormalizedModel, create_model, list_models, load_model,
                   model_payload, save_model, wrap_external)
from .fastconv import StemConv2d, set_fast_input_grad
from .teachers import freeze, load_teacher

__all__ = ["MODELS", "Backbone", "NormalizedModel", "ExternalModel", "create_model",
           "list_models", "model_payload", "save_model", "load_model", "wrap_external", "load_teacher", "freeze",
           "StemConv2d", "set_fast_input_grad"]
