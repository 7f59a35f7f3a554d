"""Tiny, randomly initialised Hugging Face models and datasets for the interop tests.

Everything is built from a config in memory: nothing is downloaded. Callers must have checked that
``transformers`` is importable (``pytest.importorskip``) before calling the model builders.
"""

import logging
import os

import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # a test that tried to reach the Hub would fail, not download

BERT_VOCAB = 50
LM_VOCAB = 32
PAD_ID = 0


def tiny_bert_classifier(seed: int = 0, num_labels: int = 2):
    """A one-layer BertForSequenceClassification without dropout, so two runs can agree exactly."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=BERT_VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
    )
    return BertForSequenceClassification(config)


def tiny_llama_lm(seed: int = 0):
    """A one-layer LlamaForCausalLM (no dropout); its loss takes ``num_items_in_batch``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=LM_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        attention_dropout=0.0, pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def copy_state(model) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def separable_classification_rows(length: int, seq_len: int = 8, seed: int = 0) -> dict:
    """Columns for a toy task the tiny BERT can learn: the label is whether token ids are high.

    Label-1 rows use ids in [30, 50), label-0 rows ids in [3, 23), so one embedding direction
    separates them. Returned as plain lists (``datasets.Dataset.from_dict`` takes them as is).
    """
    generator = torch.Generator().manual_seed(seed)
    labels = [i % 2 for i in range(length)]
    ids = [(torch.randint(30, 50, (seq_len,), generator=generator) if label
            else torch.randint(3, 23, (seq_len,), generator=generator)).tolist() for label in labels]
    return {"input_ids": ids, "attention_mask": [[1] * seq_len for _ in ids], "label": labels}


def padded_lm_rows(lengths, seq_len: int = 6, seed: int = 0, mask_first_label: bool = False) -> list:
    """Right-padded causal-LM examples: labels are the ids, -100 on padding.

    ``mask_first_label`` also sets label 0 of every row to -100 (as a masked prompt token would
    be); position 0 is never a prediction target of a causal LM, so this removes the ambiguity of
    whether it counts in ``num_items_in_batch``.
    """
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.full((seq_len,), PAD_ID, dtype=torch.long)
        ids[:n] = torch.randint(3, LM_VOCAB, (n,), generator=generator)
        labels = ids.clone()
        labels[n:] = -100
        if mask_first_label:
            labels[0] = -100
        mask = (torch.arange(seq_len) < n).long()
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return rows


class ListDataset(torch.utils.data.Dataset):
    """A map-style dataset over a list of example dicts."""

    def __init__(self, rows):
        self.rows = list(rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def log_kind(entry: dict) -> str:
    """Classify a ``log_history`` entry: a training-loss log, an evaluation, or the end-of-train summary."""
    if "train_loss" in entry:
        return "train"
    if any(key.startswith("eval_") and key.endswith("_loss") for key in entry):
        return "eval"
    if "loss" in entry:
        return "loss"
    return "other"


def checkpoint_folders(output_dir: str) -> list:
    """``checkpoint-<step>`` folders in ``output_dir``, by step."""
    if not os.path.isdir(output_dir):
        return []
    names = [name for name in os.listdir(output_dir) if name.startswith("checkpoint-")]
    return sorted(names, key=lambda name: int(name.rsplit("-", 1)[1]))


def transformers_log_messages(action, level=logging.WARNING) -> list:
    """The messages transformers logs at ``level`` or above while ``action()`` runs (its library
    logger does not propagate to the root, so pytest's caplog does not see them)."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage().lstrip("\n"))

    library_logger = logging.getLogger("transformers")
    handler = Collect(level=level)
    library_logger.addHandler(handler)
    try:
        action()
    finally:
        library_logger.removeHandler(handler)
    return messages
