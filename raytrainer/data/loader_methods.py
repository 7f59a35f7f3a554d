"""The data-loader methods of ``Trainer``, with HF's names and signatures.

They stay methods (mixed into ``Trainer``) because a subclass may override any of them, and the
loop asks the Trainer for its dataloaders. Each one only gathers the Trainer's settings and hands
them to the plain functions of ``loaders``, ``columns`` and ``stream_shards``.
"""

from collections.abc import Mapping

import torch

from . import stream_shards, streaming
from .columns import RemoveColumnsCollator, remove_unused_hf_columns, signature_columns
from .loaders import build_eval_dataloader, build_train_dataloader


class DataLoaderMethods:
    """Mixed into ``Trainer``: ``get_train_dataloader``, ``get_eval_dataloader``,
    ``get_test_dataloader``, ``num_examples``, ``get_total_train_batch_size`` and their helpers."""

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The training dataloader: a seeded per-epoch shuffle, sharded across Ray workers."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        if streaming.is_stream(self.train_dataset):  # Ray Data: this rank's shard (data/stream_shards.py)
            return stream_shards.train_batches(self, self.train_dataset, self._train_batch_size, self._dataset_shard)
        lengths = None
        original = self.train_dataset
        if (self.args.group_by_length and hasattr(original, "column_names")
                and self.args.length_column_name in original.column_names):
            lengths = list(original[self.args.length_column_name])  # read before unused columns go
        dataset = self._remove_unused_columns(original, "training")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return build_train_dataloader(
            dataset, self._collator_for(dataset, "training"), self._train_batch_size,
            seed=seed, world_size=self.args.world_size, rank=self.args.process_index,
            drop_last=self.args.dataloader_drop_last, group_by_length=self.args.group_by_length,
            lengths=lengths, shuffle=self.args.train_sampling_strategy != "sequential", **self._loader_options(),
        )

    def get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        """The evaluation dataloader: sequential, every example exactly once across workers."""
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        return self._eval_loader(eval_dataset if eval_dataset is not None else self.eval_dataset, "evaluation")

    def get_test_dataloader(self, test_dataset) -> torch.utils.data.DataLoader:
        return self._eval_loader(test_dataset, "test")

    def num_examples(self, dataloader) -> int:
        """Examples in a dataloader's dataset, or batches x batch size when it has no length."""
        try:
            return len(dataloader.dataset)
        except (NameError, AttributeError, TypeError):
            return len(dataloader) * self._train_batch_size

    def get_total_train_batch_size(self, args) -> int:
        return self._train_batch_size * args.gradient_accumulation_steps * args.world_size

    def _eval_loader(self, dataset, description: str):
        if streaming.is_stream(dataset):
            return stream_shards.eval_batches(self, dataset, description, self._dataset_shard)
        dataset = self._remove_unused_columns(dataset, description)
        return build_eval_dataloader(
            dataset, self._collator_for(dataset, description), self.args.eval_batch_size,
            world_size=self.args.world_size, rank=self.args.process_index, **self._loader_options(),
        )

    def _remove_unused_columns(self, dataset, description: str):
        if not self.args.remove_unused_columns:
            return dataset
        columns = signature_columns(self.model, self.label_names)
        if columns is None:
            return dataset
        return remove_unused_hf_columns(dataset, columns, description)

    def _collator_for(self, dataset, description: str):
        """The data collator, wrapped to drop the columns the model does not take when the dataset
        cannot drop them itself (datasets without ``column_names``)."""
        collator = self.data_collator
        if self.args.remove_unused_columns and not hasattr(dataset, "column_names"):
            columns = signature_columns(self.model, self.label_names)
            if columns is not None and not _first_example_fits(dataset, columns):
                collator = RemoveColumnsCollator(collator, columns, description=description)
        return collator

    def _loader_options(self) -> dict:
        return dict(
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and self.args.device.type == "cuda",
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            multiprocessing_context=self.args.dataloader_multiprocessing_context,
            in_order=self.args.dataloader_in_order,
        )

    def _dataset_shard(self, name: str):
        """The current run's Ray Train dataset shard called ``name``, or None."""
        context = self._run.context if self._run is not None else None
        return context.dataset_shard(name) if context is not None else None


def _first_example_fits(dataset, columns) -> bool:
    """True when a map-style dataset's first example has only columns the model takes: then no
    pruning wrapper is needed (it would cost a dict rebuild per example per step). Datasets whose
    examples change keys along the way should set their keys consistently or prune themselves."""
    try:
        example = dataset[0]
    except Exception:  # noqa: BLE001 - iterable or unsized datasets: keep the per-example pruning
        return False
    return isinstance(example, Mapping) and set(example) <= set(columns)
