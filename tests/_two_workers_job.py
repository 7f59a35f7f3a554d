"""Run by test_distributed.py in its own process, as a user's script would run: raytrainer starts
its own local Ray instance, two workers train a token-level model (its loss divides by
num_items_in_batch), and the script prints only what the user should see plus one JSON line."""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import TokenDataset, TokenModel  # noqa: E402
from ray.train import ScalingConfig  # noqa: E402

from raytrainer import Trainer, TrainingArguments  # noqa: E402


def main(out):
    torch.manual_seed(0)
    model = TokenModel()
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
                             logging_steps=1, learning_rate=0.05, save_strategy="no", report_to="none",
                             disable_tqdm=True, seed=7)
    trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(16), scaling_config=ScalingConfig(num_workers=2))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    weights = {name: value.tolist() for name, value in model.state_dict().items()}
    print("RESULT " + json.dumps({"losses": losses, "weights": weights, "accepts": trainer.model_accepts_loss_kwargs}))


if __name__ == "__main__":
    main(sys.argv[1])
