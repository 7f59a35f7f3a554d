"""raytrainer: the Hugging Face ``Trainer`` API, run natively on Ray Train.

Change ``from transformers import Trainer, TrainingArguments`` to
``from raytrainer import Trainer, TrainingArguments``; Ray's own ``ScalingConfig`` and
``RunConfig`` say where the loop runs.

The public names import their modules on first use. A process that only needs one of the
package's modules (a Ray helper process running the worker set-up hook or holding the run
channel, a command's ``--help``) does not import torch and the Trainer with it.
"""

from ._lazy import lazy_names

__version__ = "0.1.0"

_MODULE_OF = {
    name: module
    for module, names in {
        ".argparser": ("HfArgumentParser",),
        ".args": ("Seq2SeqTrainingArguments", "TrainingArguments"),
        ".callbacks": ("CallbackHandler", "DefaultFlowCallback", "EarlyStoppingCallback", "NotebookProgressCallback",
                       "PrinterCallback", "ProgressCallback", "TrainerCallback"),
        ".data.collators": ("DataCollatorWithPadding", "default_data_collator"),
        ".data.streaming": ("StreamingDataset", "stream"),
        ".enums": ("HubStrategy", "IntervalStrategy", "OptimizerNames", "SaveStrategy", "SchedulerType"),
        ".hpo": ("BestRun", "SearchSpace", "default_compute_objective", "default_hp_space_optuna",
                 "default_hp_space_ray", "load_search_space"),
        ".optim": ("get_decay_parameter_names",),
        ".outputs": ("EvalLoopOutput", "EvalPrediction", "PredictionOutput", "TrainOutput"),
        ".schedules": ("get_scheduler",),
        ".seeding": ("enable_full_determinism", "set_seed"),
        ".seq2seq": ("Seq2SeqTrainer",),
        ".state": ("TrainerControl", "TrainerState"),
        ".trainer": ("Trainer",),
    }.items()
    for name in names
}

__all__ = sorted(_MODULE_OF)


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals(), subpackages=True)
