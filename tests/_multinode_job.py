"""Run by test_multinode.py in its own process: a two-node local Ray cluster (two raylets on
loopback), one training worker per node, checkpoints on the shared disk."""

import json
import os
import sys

import ray
import torch
from ray.cluster_utils import Cluster
from ray.train import ScalingConfig

sys.path.insert(0, os.path.dirname(__file__))
from conftest import RegressionDataset, RegressionModel, runtime_env_for_tests  # noqa: E402

from raytrainer import Trainer, TrainerCallback, TrainingArguments  # noqa: E402


class RecordNode(TrainerCallback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_begin(self, args, state, control, **kwargs):
        with open(os.path.join(self.folder, f"node-of-rank-{args.process_index}"), "w") as f:
            f.write(ray.get_runtime_context().get_node_id())


def main(out):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, runtime_env=runtime_env_for_tests())
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, max_steps=4, save_strategy="steps",
                             save_steps=2, logging_steps=1, disable_tqdm=True, report_to="none")
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(32), callbacks=[RecordNode(out)],
                      scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1},
                                                   placement_strategy="STRICT_SPREAD"))
    output = trainer.train()
    json.dump({"global_step": output.global_step, "nodes": len(ray.nodes())}, open(os.path.join(out, "result.json"), "w"))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
