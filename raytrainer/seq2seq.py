"""``Seq2SeqTrainer``: evaluation and prediction through ``model.generate`` when
``predict_with_generate=True``, with ``generation_config`` (see ``raytrainer.generation_config``);
training is the plain Trainer's."""

from typing import Optional

import torch

from .generation_config import generate_kwargs, load_generation_config
from .nested import nested_detach
from .trainer import Trainer


class Seq2SeqTrainer(Trainer):
    """A ``Trainer`` whose ``evaluate``/``predict`` accept generation keyword arguments
    (``max_length``, ``max_new_tokens``, ``num_beams``, ...) and, with
    ``args.predict_with_generate``, return generated token ids as predictions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._gen_kwargs = {}
        if self.args.predict_with_generate and not callable(getattr(self.model, "generate", None)):
            raise ValueError(f"Seq2SeqTrainingArguments.predict_with_generate=True, but {type(self.model).__name__} "
                             "has no generate() method.")
        if getattr(self.args, "generation_config", None) is not None:  # it wins over the model's own
            self.model.generation_config = load_generation_config(self.args.generation_config)

    @staticmethod
    def load_generation_config(gen_config_arg):
        """``generation_config`` (an object, a dict, a path or a model name) as a checked config."""
        return load_generation_config(gen_config_arg)

    def _with_default_generation(self, gen_kwargs: dict) -> dict:
        gen_kwargs = dict(gen_kwargs)
        if gen_kwargs.get("max_length") is None and gen_kwargs.get("max_new_tokens") is None \
                and self.args.generation_max_length is not None:
            gen_kwargs["max_length"] = self.args.generation_max_length
        if gen_kwargs.get("num_beams") is None and self.args.generation_num_beams is not None:
            gen_kwargs["num_beams"] = self.args.generation_num_beams
        return gen_kwargs

    def evaluate(self, eval_dataset=None, ignore_keys: Optional[list] = None, metric_key_prefix: str = "eval",
                 **gen_kwargs) -> dict:
        self._gen_kwargs = self._with_default_generation(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys: Optional[list] = None, metric_key_prefix: str = "test",
                **gen_kwargs):
        self._gen_kwargs = self._with_default_generation(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys: Optional[list] = None,
                        **gen_kwargs):
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        has_labels = "labels" in inputs
        inputs = self._prepare_inputs(inputs)
        gen_kwargs = gen_kwargs or dict(self._gen_kwargs)
        generation_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        # decoder_input_ids built from the labels would make generate() copy the answer
        if has_labels and "decoder_input_ids" in generation_inputs:
            generation_inputs.pop("decoder_input_ids")
        core = getattr(model, "_orig_mod", model)
        gen_kwargs = generate_kwargs(core.generate, getattr(core, "generation_config", None), gen_kwargs)
        with torch.no_grad():
            generated = core.generate(**generation_inputs, **gen_kwargs)
            loss = None
            if has_labels:
                with self.compute_loss_context_manager():
                    loss = self.compute_loss(model, inputs).detach().mean()
        labels = nested_detach(inputs["labels"]) if has_labels else None
        return loss, generated, labels
