"""The Hugging Face Hub: ``push_to_hub``, ``hub_strategy`` uploads in the background, model cards.

Built on ``huggingface_hub``; ``HF_ENDPOINT`` selects the Hub (a mirror, or a local stand-in).
"""

from .methods import HubMethods
from .model_card import build_model_card

__all__ = ["HubMethods", "build_model_card"]
