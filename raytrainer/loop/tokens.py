"""Counting the input tokens a training step consumed (``include_num_input_tokens_seen``)."""

import logging

logger = logging.getLogger("raytrainer")


def input_token_count(inputs, main_input: str, mode: str, pad_token_id=None) -> int:
    """Tokens in one micro-batch: every position of the main input (``"all"``), or only the real
    ones (``"non_padding"``: the attention mask, else positions that are not the pad token).

    ``"all"`` reads only the shape; ``"non_padding"`` sums on the device and reads the sum back,
    one host-device sync per micro-batch, as in HF."""
    if not isinstance(inputs, dict) or main_input not in inputs:
        return 0
    tokens = inputs[main_input]
    if mode != "non_padding":
        return tokens.numel()
    if "attention_mask" in inputs:
        return int(inputs["attention_mask"].sum().item())  # sync: non_padding counting only
    if pad_token_id is not None:
        return int((tokens != pad_token_id).sum().item())  # sync: non_padding counting only
    _warn_once_no_padding_info()
    return tokens.numel()


_warned = []


def _warn_once_no_padding_info() -> None:
    if not _warned:
        _warned.append(True)
        logger.warning("include_num_input_tokens_seen='non_padding': the batches have no attention_mask and the "
                       "processing class no pad_token_id, so every token is counted.")
