"""GPU check of raytrainer's loop: mixed precision, compile, sharding on one GPU, and throughput.

Runs where PyTorch is installed and Ray is not (``_ray_free``), nothing downloaded. Two tables:

1. **Checks** on a small decoder, each run through raytrainer's loop from the same initial weights
   and data and compared with full precision: tf32, bf16, fp16 (gradient scaler, skipped steps
   counted), ``torch_compile`` (backend and mode), gradient checkpointing with kwargs,
   ``torch_empty_cache_steps``, bf16/fp16 full evaluation, FSDP2 (fp32 and bf16, a sharded
   checkpoint resumed exactly, the consolidated file loaded into the plain model), DeepSpeed ZeRO-2
   and ZeRO-3 (skipped with the reason when DeepSpeed does not import), and ``auto_find_batch_size``
   recovering from a real CUDA out-of-memory error.
2. **Throughput** on a GPT-2-small-sized decoder (124M parameters, random tokens, bf16), with and
   without ``torch.compile``: a bare PyTorch loop, raytrainer's loop, ``transformers.Trainer`` (when
   it imports); tokens/s, model FLOPs utilisation, ratio to the bare loop. Targets: raytrainer
   >= 0.97x the bare loop, >= 40% MFU with compile, faster than transformers.Trainer.

``--cpu --tiny`` runs every code path on a CPU in seconds (tiny shapes, the ``eager`` compile
backend; CUDA-only rows say so), which is how it is tested without a GPU.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import format_table, publish, quiet_library_logs, quiet_stdout  # noqa: E402
from _gpt import GPT, SHAPES, GPTShape, RandomTokens  # noqa: E402
from _ray_free import load  # noqa: E402

Trainer, TrainingArguments, TrainerCallback, raytrainer_train = load()
from gpu_throughput import measure_throughput  # noqa: E402  (after load(): it uses raytrainer too)

LOW_PRECISION_TOLERANCE = 3e-2  # relative difference of the mean training loss to fp32
EXACT_TOLERANCE = 1e-5


def main(argv=None):
    options = _parse(argv)
    device = "cpu" if options.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device visible: run on a GPU machine, or pass --cpu --tiny to test the script.")
    if device == "cpu" and _deepspeed_importable():
        _no_deepspeed_cpu_comm_build()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 unless a row asks for tf32
    torch.backends.cudnn.allow_tf32 = False
    started = time.time()
    with quiet_library_logs(), tempfile.TemporaryDirectory() as folder:
        checks = run_checks(options, device, folder)
        throughput = measure_throughput(options, device, folder, Trainer, TrainingArguments, TrainerCallback,
                                        raytrainer_train)
    report = _report(options, device, checks, throughput, time.time() - started)
    failed = [row for row in checks if row["status"] == "FAIL"] + [row for row in throughput["targets"] if
                                                                   row["status"] == "FAIL"]
    publish({"checks": checks, "throughput": throughput}, report, options.json)
    return 1 if failed else 0


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny: the script's own test)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and few steps: every code path in seconds")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor; eager with --tiny)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    options = parser.parse_args(argv)
    options.compile_backend = options.compile_backend or ("eager" if options.tiny else "inductor")
    return options


# ---------------------------------------------------------------------------------------- checks
def _variants(options, device):
    """(name, TrainingArguments overrides, what it is compared with, tolerance, needs CUDA)."""
    compile_options = {"torch_compile": True, "torch_compile_backend": options.compile_backend,
                       "torch_compile_mode": options.compile_mode}
    zero = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"}}
    return [
        ("tf32", {"tf32": True}, "fp32", LOW_PRECISION_TOLERANCE, True),
        ("bf16", {"bf16": True}, "fp32", LOW_PRECISION_TOLERANCE, False),
        ("fp16 + scaler", {"fp16": True}, "fp32", LOW_PRECISION_TOLERANCE, True),
        ("compile fp32", compile_options, "fp32", 1e-3, False),
        ("compile bf16", {**compile_options, "bf16": True}, "fp32", LOW_PRECISION_TOLERANCE, False),
        ("grad checkpointing", {"gradient_checkpointing": True,
                                "gradient_checkpointing_kwargs": {"use_reentrant": False}}, "fp32", EXACT_TOLERANCE, False),
        ("empty_cache_steps=2", {"torch_empty_cache_steps": 2}, "fp32", 0.0, False),
        ("fsdp fp32", {"fsdp": "full_shard auto_wrap"}, "fp32", EXACT_TOLERANCE, False),
        ("fsdp bf16", {"fsdp": "full_shard auto_wrap", "bf16": True}, "fp32", LOW_PRECISION_TOLERANCE, False),
        ("deepspeed zero2 bf16", {"deepspeed": {**zero, "zero_optimization": {"stage": 2}}, "bf16": True}, "fp32",
         LOW_PRECISION_TOLERANCE, False),
        ("deepspeed zero3 bf16", {"deepspeed": {**zero, "zero_optimization": {"stage": 3}}, "bf16": True}, "fp32",
         LOW_PRECISION_TOLERANCE, False),
    ]


def run_checks(options, device, folder):
    shape = SHAPES["tiny" if options.tiny else "small"]
    steps = 6 if options.tiny else 40
    torch.manual_seed(0)
    initial = GPT(shape).state_dict()
    data = RandomTokens(shape, 8 * steps, seed=1)
    context = dict(shape=shape, initial=initial, data=data, steps=steps, device=device, folder=folder)
    reference = _train(context, "fp32", {})
    rows = [_row("fp32", reference["loss"], None, "reference", "ok")]
    for name, overrides, _, tolerance, needs_cuda in _variants(options, device):
        if needs_cuda and device != "cuda":
            rows.append(_row(name, None, None, "needs CUDA", "skipped"))
            continue
        if "deepspeed" in overrides and not _deepspeed_importable():
            rows.append(_row(name, None, None, "DeepSpeed does not import here (pip install deepspeed)", "skipped"))
            continue
        result = _train(context, name, overrides)
        rows.append(_compared(name, result, reference, tolerance))
    rows += _evaluation_rows(context, reference, device)
    rows.append(_sharded_resume_row(context))
    rows.append(_out_of_memory_row(context) if device == "cuda" else _row("auto_find_batch_size OOM", None, None,
                                                                          "needs CUDA", "skipped"))
    return rows


def _train(context, name, overrides, resume=None):
    shape = context["shape"]
    model = GPT(shape)
    model.load_state_dict(context["initial"])
    args = dict(output_dir=os.path.join(context["folder"], name.replace(" ", "_")), per_device_train_batch_size=8,
                max_steps=context["steps"], learning_rate=1e-3, logging_steps=context["steps"], save_strategy="no",
                report_to="none", disable_tqdm=True, seed=0, use_cpu=context["device"] == "cpu",
                per_device_eval_batch_size=8)
    args.update(overrides)
    trainer = Trainer(model=model, args=TrainingArguments(**args), train_dataset=context["data"],
                      eval_dataset=context["data"])
    try:
        with quiet_stdout():
            output = raytrainer_train(trainer, resume)
            evaluation = trainer.evaluate()["eval_loss"]
    finally:  # tf32=True sets torch's global flags: the next row is full precision again
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return {"loss": output.training_loss, "eval_loss": evaluation, "trainer": trainer,
            "skipped": output.metrics.get("train_skipped_steps")}


def _compared(name, result, reference, tolerance):
    difference = abs(result["loss"] - reference["loss"]) / abs(reference["loss"])
    detail = f"rel. diff {difference:.2e} (tol {tolerance:.0e})"
    if result.get("skipped") is not None:
        detail += f", {result['skipped']} skipped steps"
    return _row(name, result["loss"], difference, detail, "ok" if difference <= tolerance else "FAIL")


def _evaluation_rows(context, reference, device):
    rows = []
    for name, flag, needs_cuda in (("bf16_full_eval", "bf16_full_eval", False), ("fp16_full_eval", "fp16_full_eval", True)):
        if needs_cuda and device != "cuda":
            rows.append(_row(name, None, None, "needs CUDA", "skipped"))
            continue
        trainer = reference["trainer"]
        full_precision = trainer.args
        trainer.args = dataclasses.replace(full_precision, **{flag: True})  # the trained fp32 model, in half precision
        with quiet_stdout():
            loss = trainer.evaluate()["eval_loss"]
        trainer.args = full_precision
        difference = abs(loss - reference["eval_loss"]) / abs(reference["eval_loss"])
        rows.append(_row(name, loss, difference, f"eval loss vs fp32 eval, tol {LOW_PRECISION_TOLERANCE:.0e}",
                         "ok" if difference <= LOW_PRECISION_TOLERANCE else "FAIL"))
    return rows


def _sharded_resume_row(context):
    """FSDP: save the shards half way, resume from them, end with the same weights; the consolidated
    file loads into the plain model."""
    from raytrainer.checkpoints.weights import load_weights

    half = context["steps"] // 2
    through = _train(context, "fsdp save", {"fsdp": "full_shard auto_wrap", "save_strategy": "steps", "save_steps": half})
    resumed = _train(context, "fsdp save", {"fsdp": "full_shard auto_wrap"},
                     resume=os.path.join(context["folder"], "fsdp_save", f"checkpoint-{half}"))
    weights = {}
    for label, result in (("through", through), ("resumed", resumed)):
        folder = os.path.join(context["folder"], f"consolidated-{label}")
        result["trainer"].save_model(folder)
        plain = GPT(context["shape"])
        load_weights(plain, folder)
        weights[label] = plain.state_dict()
    difference = max((weights["through"][k] - weights["resumed"][k]).abs().max().item() for k in weights["through"])
    return _row("fsdp resume from shards", resumed["loss"], difference, "max |weight diff| after resume (must be 0)",
                "ok" if difference == 0 else "FAIL")


def _out_of_memory_row(context):
    """A batch far too large for the GPU: the first forward runs out of memory, and
    ``auto_find_batch_size`` retries with smaller batches until one fits."""
    shape = GPTShape(layers=1, heads=2, width=64, positions=1024, vocab=50257)  # big logits, small weights
    free, _ = torch.cuda.mem_get_info()
    too_large = int(2 * free / (shape.positions * shape.vocab * 4)) + 1  # the fp32 logits alone need 2x the memory
    torch.manual_seed(0)
    big = {**context, "shape": shape, "initial": GPT(shape).state_dict(), "data": RandomTokens(shape, too_large, seed=2),
           "steps": 2}
    try:
        result = _train(big, "oom", {"auto_find_batch_size": True, "per_device_train_batch_size": too_large})
    except torch.OutOfMemoryError as error:
        return _row("auto_find_batch_size OOM", None, None, f"not recovered: {str(error)[:60]}", "FAIL")
    found = result["trainer"].state.train_batch_size
    return _row("auto_find_batch_size OOM", result["loss"], None, f"batch {too_large} -> {found} after OOM",
                "ok" if found < too_large else "FAIL")


def _row(name, loss, difference, detail, status):
    return {"check": name, "loss": loss, "difference": difference, "detail": detail, "status": status}


def _deepspeed_importable() -> bool:
    try:
        import deepspeed  # noqa: F401
    except Exception:  # noqa: BLE001 - an import that fails for any reason means "not here"
        return False
    return True


def _no_deepspeed_cpu_comm_build() -> None:
    """On a CPU DeepSpeed JIT-compiles a shared-memory all-reduce op (about a minute of C++ on small
    machines, behind a file lock a killed build leaves for every later run to wait on). The script's
    one-process runs have nothing to all-reduce, so DeepSpeed is told the op is unavailable."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


# ---------------------------------------------------------------------------------------- report
def _report(options, device, checks, throughput, seconds):
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    lines = [f"raytrainer GPU check on {name}, torch {torch.__version__}, {seconds:.0f} s"
             + (" (--tiny: shapes too small for meaningful numbers)" if options.tiny else ""), "",
             "Checks (raytrainer's loop vs full precision, same weights and data)"]
    lines.append(format_table(["check", "train loss", "detail", "status"],
                              [[r["check"], "-" if r["loss"] is None else f"{r['loss']:.5f}", r["detail"], r["status"]]
                               for r in checks]))
    lines += ["", throughput["title"], format_table(throughput["headers"], throughput["rows"]), "",
              "Targets", format_table(["target", "measured", "status"],
                                      [[t["target"], t["measured"], t["status"]] for t in throughput["targets"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
