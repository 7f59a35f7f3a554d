"""The ``Trainer`` names of transformers v4 that v5 dropped: ``Trainer(tokenizer=...)``, the
``trainer.tokenizer`` attribute, ``train(model_path=...)``, ``prediction_loop`` and ``num_tokens``.
Each keeps working and, where v5 renamed it, says the new spelling in a ``FutureWarning``."""

import logging
import warnings

logger = logging.getLogger("raytrainer")


def _deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    # stacklevel 3: the user's line that called the deprecated method (warn <- here <- method <- user)
    warnings.warn(f"{old} is the transformers v4 spelling; write {new} instead.", FutureWarning,
                  stacklevel=stacklevel)


def processing_class_from(processing_class, tokenizer):
    """``Trainer(tokenizer=...)`` (v4) is ``Trainer(processing_class=...)`` (v5)."""
    if tokenizer is None:
        return processing_class
    _deprecated("Trainer(tokenizer=...)", "Trainer(processing_class=...)", stacklevel=4)
    if processing_class is not None and processing_class is not tokenizer:
        raise ValueError("Trainer: tokenizer= (the transformers v4 spelling) and processing_class= are both given "
                         "and differ; pass only processing_class.")
    return tokenizer


def resume_from_v4_train_kwargs(kwargs: dict, resume_from_checkpoint):
    """``train(model_path=...)`` (v4) is ``train(resume_from_checkpoint=...)``; any other unknown
    keyword is an error, as in v5."""
    if "model_path" in kwargs:
        model_path = kwargs.pop("model_path")
        _deprecated("train(model_path=...)", "train(resume_from_checkpoint=...)", stacklevel=4)
        if resume_from_checkpoint is not None and resume_from_checkpoint != model_path:
            raise ValueError("train(): model_path= (the transformers v4 spelling) and resume_from_checkpoint= "
                             "disagree; pass only resume_from_checkpoint.")
        resume_from_checkpoint = model_path
    if kwargs:
        raise TypeError(f"train() got unexpected keyword arguments: {', '.join(sorted(kwargs))}.")
    return resume_from_checkpoint


class V4TrainerNames:
    """Mixed into ``Trainer``."""

    @property
    def tokenizer(self):
        """v4 name of ``processing_class``."""
        _deprecated("Trainer.tokenizer", "Trainer.processing_class")
        return self.processing_class

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        _deprecated("Trainer.tokenizer", "Trainer.processing_class")
        self.processing_class = value

    def prediction_loop(self, dataloader, description: str, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        """v4's legacy loop; the one loop there is, ``evaluation_loop``, runs instead."""
        _deprecated("Trainer.prediction_loop", "Trainer.evaluation_loop")
        return self.evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                    ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def num_tokens(self, train_dl, max_steps=None) -> int:
        """Tokens (``input_ids`` positions, padding included) in ``train_dl``; with ``max_steps``,
        the first batch's count times ``max_steps`` (an estimate that reads one batch only)."""
        total = 0
        for batch in train_dl:
            if not hasattr(batch, "keys") or "input_ids" not in batch:
                logger.warning("num_tokens: the batches have no 'input_ids'; counted %d tokens.", total)
                return total
            tokens = batch["input_ids"].numel()
            if max_steps is not None:
                return tokens * max_steps
            total += tokens
        return total
