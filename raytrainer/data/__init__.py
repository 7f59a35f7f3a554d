"""Data plumbing: collators, column pruning, seeded samplers, per-rank DataLoaders and Ray Data
streams."""

from raytrainer.data.collators import (
    DataCollatorWithPadding,
    SequencePadder,
    default_data_collator,
    pad_sequences,
)
from raytrainer.data.columns import (
    RemoveColumnsCollator,
    remove_unused_hf_columns,
    signature_columns,
)
from raytrainer.data.loaders import (
    IterableDatasetShard,
    build_eval_dataloader,
    build_train_dataloader,
    has_length,
    lengths_from_dataset,
    set_dataloader_epoch,
)
from raytrainer.data.streaming import StreamingDataset, stream
from raytrainer.data.samplers import (
    EpochShuffleSampler,
    LengthGroupedSampler,
    ShardedEvalSampler,
    num_batches_per_rank,
    shard_order,
)

__all__ = [
    "DataCollatorWithPadding",
    "EpochShuffleSampler",
    "IterableDatasetShard",
    "LengthGroupedSampler",
    "RemoveColumnsCollator",
    "SequencePadder",
    "ShardedEvalSampler",
    "StreamingDataset",
    "build_eval_dataloader",
    "build_train_dataloader",
    "default_data_collator",
    "has_length",
    "lengths_from_dataset",
    "num_batches_per_rank",
    "pad_sequences",
    "remove_unused_hf_columns",
    "set_dataloader_epoch",
    "shard_order",
    "signature_columns",
    "stream",
]
