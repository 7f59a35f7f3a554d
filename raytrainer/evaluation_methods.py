"""The evaluation and prediction methods of ``Trainer``, with HF's names and signatures.

``evaluate``/``predict`` decide where the evaluation runs: where the model lives, so on Ray Train
workers after a multi-worker run (``runtime/remote_eval.py``), else in this process. The loop
itself is ``loop/evaluation.py``; ``evaluation_loop`` and ``prediction_step`` stay methods so a
subclass's version is the one the loop runs.
"""

import math
import time
from typing import Optional

from .loop.evaluation import run_evaluation_loop, run_prediction_step
from .outputs import PredictionOutput, speed_metrics
from .runtime.ray_session import quiet_ray


class EvaluationMethods:
    """Mixed into ``Trainer``: ``evaluate``, ``predict``, ``evaluation_loop``, ``prediction_step``."""

    def evaluate(self, eval_dataset=None, ignore_keys: Optional[list] = None, metric_key_prefix: str = "eval") -> dict:
        """Evaluate on ``eval_dataset`` (or the Trainer's); a dict of datasets is evaluated one by one
        with the key added to the metric names (``eval_<key>_loss``)."""
        if self._evaluates_on_workers():
            from .runtime.remote_eval import evaluate_on_workers

            return evaluate_on_workers(self, "evaluate", dict(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                                              metric_key_prefix=metric_key_prefix))
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets, dict):
            metrics = {}
            for name, dataset in datasets.items():
                metrics.update(self.evaluate(dataset if eval_dataset is not None else name, ignore_keys,
                                             f"{metric_key_prefix}_{name}"))
            return metrics
        output = self._measured_loop(
            "eval", lambda: self.get_eval_dataloader(eval_dataset), metric_key_prefix, description="Evaluation",
            prediction_loss_only=True if self.compute_metrics is None else None, ignore_keys=ignore_keys,
        )
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys: Optional[list] = None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Predictions (and metrics, when labels are present) on ``test_dataset``."""
        if self._evaluates_on_workers():
            from .runtime.remote_eval import evaluate_on_workers

            return evaluate_on_workers(self, "predict", dict(test_dataset=test_dataset, ignore_keys=ignore_keys,
                                                             metric_key_prefix=metric_key_prefix))
        output = self._measured_loop("test", lambda: self.get_test_dataloader(test_dataset), metric_key_prefix,
                                     description="Prediction", ignore_keys=ignore_keys)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics=output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: Optional[bool] = None,
                        ignore_keys: Optional[list] = None, metric_key_prefix: str = "eval"):
        with quiet_ray(self.args):  # a Ray Data stream read here would print Ray's lines
            return run_evaluation_loop(self, self._evaluation_run(), dataloader, description, prediction_loss_only,
                                       ignore_keys, metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys: Optional[list] = None):
        """``(loss, logits, labels)`` of one evaluation batch, without gradients."""
        return run_prediction_step(self, model, inputs, prediction_loss_only, ignore_keys)

    def _evaluates_on_workers(self) -> bool:
        """Evaluation runs where the model lives: on Ray Train workers for a multi-worker
        ScalingConfig (the workers' own rebuilt Trainer, and evaluations during training, run here)."""
        from .runtime.scaling import is_local_mode

        return not self.is_in_train and self._run is None and not is_local_mode(self.scaling_config)

    def _measured_loop(self, stage: str, make_dataloader, metric_key_prefix: str, **loop_options):
        """``evaluation_loop`` with HF's speed and memory metrics added to its metrics. The memory
        count starts before the dataloader is built, as HF's does; inside ``train()`` it counts
        toward the train stage instead."""
        if not self.is_in_train:
            self._memory_tracker.start(stage)
        dataloader = make_dataloader()
        start = time.time()
        output = self.evaluation_loop(dataloader, metric_key_prefix=metric_key_prefix, **loop_options)
        output.metrics.update(self._eval_speed(metric_key_prefix, start, output.num_samples))
        self._memory_tracker.stop_and_update_metrics(stage, output.metrics)
        return output

    def _eval_speed(self, prefix: str, start: float, num_samples: int) -> dict:
        total_batch = self.args.eval_batch_size * self.args.world_size
        return speed_metrics(prefix, start, num_samples=num_samples, num_steps=math.ceil(num_samples / total_batch))
