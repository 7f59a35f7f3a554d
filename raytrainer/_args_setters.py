"""The ``set_*`` helpers of TrainingArguments: grouped setters with the HF v5 signatures.

Each returns the arguments object itself (for chaining) and re-validates, on a copy, so a rejected
change leaves the object as it was.
"""

import dataclasses
from typing import TYPE_CHECKING, Optional, Union

from raytrainer.enums import HubStrategy, IntervalStrategy, OptimizerNames, SaveStrategy, SchedulerType

if TYPE_CHECKING:
    from raytrainer.args import TrainingArguments


class GroupSetters:
    """Mixed into ``TrainingArguments``."""

    def _apply(self, **changes) -> "TrainingArguments":
        """Validate the changed copy first so that a rejected change leaves ``self`` untouched."""
        updated = dataclasses.replace(self, **changes)
        self.__dict__.update(updated.__dict__)
        return self

    def set_training(
        self,
        learning_rate: float = 5e-5,
        batch_size: int = 8,
        weight_decay: float = 0,
        num_epochs: float = 3,
        max_steps: int = -1,
        gradient_accumulation_steps: int = 1,
        seed: int = 42,
        gradient_checkpointing: bool = False,
        activation_checkpointing: Optional[bool] = None,
    ) -> "TrainingArguments":
        """Set the basic training knobs and ``do_train=True``; returns ``self``.
        ``activation_checkpointing`` (v5 name) wins over ``gradient_checkpointing`` when given."""
        if activation_checkpointing is not None:
            gradient_checkpointing = activation_checkpointing
        return self._apply(
            activation_checkpointing=None,
            do_train=True,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            weight_decay=weight_decay,
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            gradient_accumulation_steps=gradient_accumulation_steps,
            seed=seed,
            gradient_checkpointing=gradient_checkpointing,
        )

    def set_evaluate(
        self,
        strategy: Union[str, IntervalStrategy] = "no",
        steps: int = 500,
        batch_size: int = 8,
        accumulation_steps: Optional[int] = None,
        delay: Optional[float] = None,
        loss_only: bool = False,
        jit_mode: bool = False,
    ) -> "TrainingArguments":
        """Set the evaluation knobs (``do_eval`` follows the strategy); returns ``self``.
        ``jit_mode`` (v4) sets ``jit_mode_eval``."""
        return self._apply(
            jit_mode_eval=jit_mode,
            eval_strategy=strategy,
            do_eval=IntervalStrategy.parse(strategy, "strategy") != IntervalStrategy.NO,
            eval_steps=steps,
            per_device_eval_batch_size=batch_size,
            eval_accumulation_steps=accumulation_steps,
            eval_delay=delay,
            prediction_loss_only=loss_only,
        )

    def set_testing(self, batch_size: int = 8, loss_only: bool = False, jit_mode: bool = False) -> "TrainingArguments":
        """Set the test-set knobs and ``do_predict=True``; returns ``self``. ``jit_mode`` (v4)
        sets ``jit_mode_eval``."""
        return self._apply(
            do_predict=True, per_device_eval_batch_size=batch_size, prediction_loss_only=loss_only,
            jit_mode_eval=jit_mode,
        )

    def set_save(
        self,
        strategy: Union[str, SaveStrategy] = "steps",
        steps: int = 500,
        total_limit: Optional[int] = None,
        on_each_node: bool = False,
    ) -> "TrainingArguments":
        """Set the checkpointing knobs; returns ``self``."""
        return self._apply(
            save_strategy=strategy,
            save_steps=steps,
            save_total_limit=total_limit,
            save_on_each_node=on_each_node,
        )

    def set_logging(
        self,
        strategy: Union[str, IntervalStrategy] = "steps",
        steps: int = 500,
        report_to: Union[str, list[str]] = "none",
        level: str = "passive",
        first_step: bool = False,
        nan_inf_filter: bool = True,
        on_each_node: bool = True,
        replica_level: str = "passive",
    ) -> "TrainingArguments":
        """Set the logging knobs; returns ``self``."""
        return self._apply(
            logging_strategy=strategy,
            logging_steps=steps,
            report_to=report_to,
            log_level=level,
            logging_first_step=first_step,
            logging_nan_inf_filter=nan_inf_filter,
            log_on_each_node=on_each_node,
            log_level_replica=replica_level,
        )

    def set_push_to_hub(
        self,
        model_id: str,
        strategy: Union[str, HubStrategy] = "every_save",
        token: Optional[str] = None,
        private_repo: bool = False,
        always_push: bool = False,
        revision: Optional[str] = None,
    ) -> "TrainingArguments":
        """Record the Hub settings (reported as ignored: there is no upload); returns ``self``."""
        return self._apply(
            push_to_hub=True,
            hub_model_id=model_id,
            hub_strategy=strategy,
            hub_token=token,
            hub_private_repo=private_repo,
            hub_always_push=always_push,
            hub_revision=revision,
        )

    def set_optimizer(
        self,
        name: Union[str, OptimizerNames] = "adamw_torch",
        learning_rate: float = 5e-5,
        weight_decay: float = 0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        args: Optional[str] = None,
    ) -> "TrainingArguments":
        """Set the optimizer and its hyperparameters; returns ``self``."""
        return self._apply(
            optim=name,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            adam_beta1=beta1,
            adam_beta2=beta2,
            adam_epsilon=epsilon,
            optim_args=args,
        )

    def set_lr_scheduler(
        self,
        name: Union[str, SchedulerType] = "linear",
        num_epochs: float = 3.0,
        max_steps: int = -1,
        warmup_steps: float = 0,
        warmup_ratio: float = 0,
    ) -> "TrainingArguments":
        """Set the schedule, its length and warmup (count, or ratio below 1); returns ``self``.
        ``warmup_ratio`` is the v4 way to give a ratio; ``warmup_steps`` wins when both are set."""
        return self._apply(
            warmup_ratio=warmup_ratio,
            lr_scheduler_type=name,
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            warmup_steps=warmup_steps,
        )

    def set_dataloader(
        self,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        prefetch_factor: Optional[int] = None,
        auto_find_batch_size: bool = False,
        ignore_data_skip: bool = False,
        sampler_seed: Optional[int] = None,
        multiprocessing_context: Optional[str] = None,
        in_order: bool = True,
    ) -> "TrainingArguments":
        """Set the data-loading knobs; returns ``self``."""
        return self._apply(
            dataloader_multiprocessing_context=multiprocessing_context,
            dataloader_in_order=in_order,
            per_device_train_batch_size=train_batch_size,
            per_device_eval_batch_size=eval_batch_size,
            dataloader_drop_last=drop_last,
            dataloader_num_workers=num_workers,
            dataloader_pin_memory=pin_memory,
            dataloader_persistent_workers=persistent_workers,
            dataloader_prefetch_factor=prefetch_factor,
            auto_find_batch_size=auto_find_batch_size,
            ignore_data_skip=ignore_data_skip,
            data_seed=sampler_seed,
        )
