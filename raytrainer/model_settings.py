"""What the arguments decide about the model when the Trainer is built: the label smoother, and
the settings v5 writes onto the model's config (``use_cache``)."""

import warnings

from .loop.losses import LabelSmoother


def build_label_smoother(args, model):
    """HF's smoother for ``label_smoothing_factor > 0``. Smoothing a softmax over classes makes no
    sense for a multi-label model (independent sigmoids), so there it is turned off with HF's warning."""
    if not args.label_smoothing_factor:
        return None
    if getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification":
        warnings.warn("Label smoothing is not compatible with multi-label classification. "
                      "Disabling label smoothing for this training run.", UserWarning, stacklevel=3)
        return None
    return LabelSmoother(args.label_smoothing_factor)


def apply_model_settings(model, args) -> None:
    """What the arguments set on the model itself: ``use_cache`` on a model with a config (v5)."""
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = args.use_cache
