"""``Trainer.create_model_card``: a draft ``README.md`` for the Hub, built from what the Trainer
knows (its arguments, its log history, the model) with ``huggingface_hub``'s ``ModelCard``.

The metadata block carries the license, language, base model, datasets and tags (``raytrainer``
and ``generated_from_trainer``, merged with the tags of an existing card); with a task and a
dataset it also carries the last evaluation's results (``model-index``). The text gives the
final evaluation results, the training hyperparameters, a table of every evaluation during
training and the versions of the libraries used.
"""

import importlib.metadata
import os

SPEED_KEYS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step", "total_flos")
DEFAULT_TAGS = ["raytrainer", "generated_from_trainer"]
FRAMEWORKS = (("raytrainer", "raytrainer"), ("Ray", "ray"), ("PyTorch", "torch"), ("Transformers", "transformers"),
              ("Datasets", "datasets"), ("huggingface_hub", "huggingface_hub"))


def as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _metric_title(key: str) -> str:
    """``eval_f1_macro`` -> ``F1 Macro``."""
    return " ".join(part.capitalize() for part in key.removeprefix("eval_").split("_"))


def evaluation_rows(log_history: list) -> list:
    """One row per evaluation during training: the last training loss logged before it, the
    epoch, the step, the validation loss and the other metrics."""
    rows, training_loss = [], "No log"
    for entry in log_history:
        if "loss" in entry:
            training_loss = entry["loss"]
        if "eval_loss" not in entry:
            continue
        row = {"Training Loss": training_loss, "Epoch": entry.get("epoch"), "Step": entry.get("step"),
               "Validation Loss": entry["eval_loss"]}
        for key, value in entry.items():
            if key.startswith("eval_") and key != "eval_loss" and key.removeprefix("eval_") not in SPEED_KEYS:
                row[_metric_title(key)] = value
        rows.append(row)
    return rows


def final_results(log_history: list) -> dict:
    """The last evaluation's metrics, by metric name without the ``eval_`` prefix."""
    for entry in reversed(log_history):
        if "eval_loss" in entry:
            return {key.removeprefix("eval_"): value for key, value in entry.items()
                    if key.startswith("eval_") and key.removeprefix("eval_") not in SPEED_KEYS}
    return {}


def _format(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(rows: list) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(":---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_format(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def hyperparameters(trainer) -> dict:
    args = trainer.args
    workers = getattr(trainer.scaling_config, "num_workers", None) or 1
    values = {"learning_rate": args.learning_rate, "train_batch_size": args.per_device_train_batch_size,
              "eval_batch_size": args.per_device_eval_batch_size, "seed": args.seed}
    if workers > 1:
        values["distributed_type"] = "Ray Train (DDP)"
        values["num_workers"] = workers
    if args.gradient_accumulation_steps > 1:
        values["gradient_accumulation_steps"] = args.gradient_accumulation_steps
    if workers > 1 or args.gradient_accumulation_steps > 1:
        values["total_train_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * workers
    values["optimizer"] = f"{args.optim.value} (betas=({args.adam_beta1}, {args.adam_beta2}), epsilon={args.adam_epsilon})" \
        if "adam" in args.optim.value else args.optim.value
    values["lr_scheduler_type"] = args.lr_scheduler_type.value
    if args.warmup_steps:
        values["lr_scheduler_warmup_steps"] = args.warmup_steps
    elif args.warmup_ratio:
        values["lr_scheduler_warmup_ratio"] = args.warmup_ratio
    values["training_steps" if args.max_steps > 0 else "num_epochs"] = args.max_steps if args.max_steps > 0 \
        else args.num_train_epochs
    if args.fp16 or args.bf16:
        values["mixed_precision_training"] = "fp16" if args.fp16 else "bf16"
    return values


def framework_versions() -> dict:
    versions = {}
    for title, package in FRAMEWORKS:
        try:
            versions[title] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def base_model_of(model):
    """The Hub id the model was loaded from (a transformers model's ``config._name_or_path``),
    unless it is a local folder."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    return name if isinstance(name, str) and name and not os.path.isdir(name) else None


def _existing_tags(path: str) -> list:
    if not os.path.isfile(path):
        return []
    from huggingface_hub import ModelCard

    return list(ModelCard.load(path).data.tags or [])


def _eval_results(results: dict, tasks: list, datasets: list, dataset_tags: list, dataset_args: list) -> list:
    """``model-index`` entries: only when a task and a dataset say what the numbers measure."""
    from huggingface_hub import EvalResult

    if not (tasks and (dataset_tags or datasets)):
        return []
    name = (datasets or dataset_tags)[0]
    return [EvalResult(task_type=tasks[0], dataset_type=(dataset_tags or datasets)[0], dataset_name=name,
                       dataset_args=dataset_args[0] if dataset_args else None, metric_type=metric,
                       metric_name=_metric_title(metric), metric_value=value)
            for metric, value in results.items() if isinstance(value, (int, float))]


def build_model_card(trainer, *, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                     tasks=None, dataset_tags=None, dataset=None, dataset_args=None):
    """The ``ModelCard`` ``Trainer.create_model_card`` writes (see the module docstring)."""
    from huggingface_hub import ModelCard, ModelCardData

    history = trainer.state.log_history
    path = os.path.join(trainer.args.output_dir, "README.md")
    all_tags = list(dict.fromkeys(DEFAULT_TAGS + as_list(tags) + _existing_tags(path)))
    finetuned_from = finetuned_from or base_model_of(trainer.model)
    datasets = as_list(dataset) or as_list(dataset_tags)
    model_name = model_name or os.path.basename(os.path.abspath(trainer.args.output_dir))
    results = final_results(history)
    data = ModelCardData(
        language=language, license=license, tags=all_tags, base_model=finetuned_from, datasets=datasets or None,
        model_name=model_name, eval_results=_eval_results(results, as_list(tasks), as_list(dataset),
                                                          as_list(dataset_tags), as_list(dataset_args)) or None,
    )
    origin = f" a fine-tuned version of [{finetuned_from}](https://huggingface.co/{finetuned_from})" \
        if finetuned_from else " a model"
    on_data = f" on the {', '.join(datasets)} dataset" if datasets else ""
    sections = [f"# {model_name}", f"This is{origin} trained with raytrainer (the Hugging Face Trainer API on "
                f"Ray){on_data}."]
    if results:
        sections.append("It achieves the following results on the evaluation set:\n"
                        + "\n".join(f"- {_metric_title(key)}: {_format(value)}" for key, value in results.items()))
    sections.append("## Training procedure\n\n### Training hyperparameters\n\n"
                    + "\n".join(f"- {key}: {value}" for key, value in hyperparameters(trainer).items()))
    rows = evaluation_rows(history)
    if rows:
        sections.append("### Training results\n\n" + _table(rows))
    sections.append("### Framework versions\n\n"
                    + "\n".join(f"- {name} {version}" for name, version in framework_versions().items()))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
