"""raytrainer: the Hugging Face ``Trainer`` API, run natively on Ray Train.

Change ``from transformers import Trainer, TrainingArguments`` to
``from raytrainer import Trainer, TrainingArguments``; Ray's own ``ScalingConfig`` and
``RunConfig`` say where the loop runs.
"""

from .argparser import HfArgumentParser
from .args import Seq2SeqTrainingArguments, TrainingArguments
from .callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    NotebookProgressCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from .data.collators import DataCollatorWithPadding, default_data_collator
from .data.streaming import StreamingDataset, stream
from .enums import HubStrategy, IntervalStrategy, OptimizerNames, SaveStrategy, SchedulerType
from .hpo import (
    BestRun,
    SearchSpace,
    default_compute_objective,
    default_hp_space_optuna,
    default_hp_space_ray,
    load_search_space,
)
from .optim import get_decay_parameter_names
from .outputs import EvalLoopOutput, EvalPrediction, PredictionOutput, TrainOutput
from .schedules import get_scheduler
from .seeding import enable_full_determinism, set_seed
from .seq2seq import Seq2SeqTrainer
from .state import TrainerControl, TrainerState
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "BestRun",
    "CallbackHandler",
    "DataCollatorWithPadding",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EvalLoopOutput",
    "EvalPrediction",
    "HfArgumentParser",
    "HubStrategy",
    "IntervalStrategy",
    "NotebookProgressCallback",
    "OptimizerNames",
    "PredictionOutput",
    "PrinterCallback",
    "ProgressCallback",
    "SaveStrategy",
    "SchedulerType",
    "SearchSpace",
    "StreamingDataset",
    "Seq2SeqTrainer",
    "Seq2SeqTrainingArguments",
    "TrainOutput",
    "Trainer",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
    "TrainingArguments",
    "default_compute_objective",
    "default_data_collator",
    "default_hp_space_optuna",
    "default_hp_space_ray",
    "enable_full_determinism",
    "get_decay_parameter_names",
    "get_scheduler",
    "load_search_space",
    "set_seed",
    "stream",
]
