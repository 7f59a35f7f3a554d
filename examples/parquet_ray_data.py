"""Train from a folder of parquet files, streamed through Ray Data, on two Ray Train workers.

    python examples/parquet_ray_data.py [--data_dir out/digits_parquet] [--num_workers 2]
                                        [--cpus_per_worker 0.5] [--output_dir ...]

The first run writes scikit-learn's digits as a few parquet files into ``--data_dir`` (a stand-in
for a data set larger than memory: nothing below reads it whole). ``raytrainer.stream(folder)``
hands it to Ray Data; each worker reads its own shard (``get_dataset_shard``), shuffled per epoch
with a seed, and the row count known from the parquet footers lets epochs and the learning-rate
schedule work as with an in-memory dataset. Ray Data's read tasks need CPUs of their own: half a
CPU per worker leaves one of a laptop's two to them (on a cluster, give each worker 1 or more).
Any TrainingArguments field can be given too.
"""

import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.train import ScalingConfig

from raytrainer import HfArgumentParser, Trainer, TrainingArguments, stream

from quickstart import DigitClassifier, accuracy


def write_digits_parquet(folder: str, files: int = 4, seed: int = 0) -> None:
    """Train and dev splits of the digits as ``folder/train/part-*.parquet`` and
    ``folder/dev/part-0.parquet``, with a ``pixels`` list column and a ``labels`` column."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    pixels, labels = (digits.data[order] / 16.0).astype(np.float32), digits.target[order].astype(np.int64)
    cut = int(0.8 * len(labels))
    splits = {"train": np.array_split(np.arange(cut), files), "dev": [np.arange(cut, len(labels))]}
    for split, parts in splits.items():
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        for index, rows in enumerate(parts):
            table = pa.table({"pixels": pa.array(list(pixels[rows]), type=pa.list_(pa.float32(), 64)),
                              "labels": pa.array(labels[rows])})
            pq.write_table(table, os.path.join(folder, split, f"part-{index}.parquet"))


def parse(argv):
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--data_dir", default="out/digits_parquet")
    own.add_argument("--num_workers", type=int, default=2)
    own.add_argument("--cpus_per_worker", type=float, default=0.5)
    options, rest = own.parse_known_args(argv)
    defaults = ["--output_dir", "out/parquet_ray_data", "--num_train_epochs", "2", "--learning_rate", "3e-3",
                "--per_device_train_batch_size", "32", "--eval_strategy", "epoch", "--save_strategy", "epoch",
                "--save_total_limit", "1", "--logging_steps", "5", "--report_to", "none",
                "--ddp_find_unused_parameters", "false"]
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(defaults + rest)
    return options, args


def main(argv=None):
    options, args = parse(list(argv or []))
    if not os.path.isdir(os.path.join(options.data_dir, "train")):
        write_digits_parquet(options.data_dir)
    trainer = Trainer(
        model=DigitClassifier(),
        args=args,
        train_dataset=stream(os.path.join(options.data_dir, "train")),   # shuffled per epoch, sharded per worker
        eval_dataset=stream(os.path.join(options.data_dir, "dev")),      # every row evaluated once
        compute_metrics=accuracy,
        scaling_config=ScalingConfig(num_workers=options.num_workers,
                                     resources_per_worker={"CPU": options.cpus_per_worker}),
    )
    result = trainer.train()
    metrics = trainer.evaluate()
    print(f"{options.num_workers} workers, {result.global_step} steps: dev accuracy {metrics['eval_accuracy']:.3f} "
          f"(checkpoints in {os.path.abspath(args.output_dir)})")
    return result, metrics


if __name__ == "__main__":
    main(sys.argv[1:])
