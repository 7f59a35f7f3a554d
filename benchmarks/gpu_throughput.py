"""Throughput of the GPU check: a GPT-2-small-sized decoder trained on random tokens in bf16, by a bare
PyTorch loop (the limit), raytrainer's loop and ``transformers.Trainer``, with and without
``torch.compile``. Every contestant trains the same initial weights on the same data with the same
maths: AdamW (fused on GPU, no weight decay), linear decay, clipping at 1.0, bf16 autocast.
Time is measured between the end of the warm-up steps and the end of training, with one device
synchronisation at each end (the loops themselves sync only where they would anyway).
"""

import gc
import os
import time

import torch

from _common import quiet_stdout
from _gpt import SHAPES, GPT, RandomTokens, flops_per_token

_PEAK_BF16 = (("H200", 989.4e12), ("H100 PCIe", 756e12), ("H100", 989.4e12), ("A100", 312e12), ("L40S", 362e12))


def measure_throughput(options, device, folder, Trainer, TrainingArguments, TrainerCallback, raytrainer_train):
    shape = SHAPES["tiny" if options.tiny else "gpt2-small"]
    batch, steps, warmup = (4, 6, 2) if options.tiny else (16, 50, 10)
    torch.manual_seed(0)
    initial = GPT(shape).state_dict()
    data = RandomTokens(shape, batch * steps, seed=3)
    setting = dict(shape=shape, initial=initial, data=data, batch=batch, steps=steps, warmup=warmup, device=device,
                   folder=folder, backend=options.compile_backend, mode=options.compile_mode)
    contestants = {"bare": _bare_loop,
                   "raytrainer": lambda s, c: _raytrainer(s, c, Trainer, TrainingArguments, TrainerCallback,
                                                          raytrainer_train),
                   "transformers": _transformers}
    peak = options.peak_tflops * 1e12 if options.peak_tflops else _peak(device)
    per_token = flops_per_token(GPT(shape))
    results = {}
    for compiled in (False, True):
        for name, run in contestants.items():
            _fresh(device)
            try:
                with quiet_stdout():  # both Trainers print their log dicts
                    tokens_per_second = run(setting, compiled)
            except ImportError as error:
                results[(name, compiled)] = {"error": f"skipped: {error}"}
                continue
            results[(name, compiled)] = {"tokens_per_second": tokens_per_second,
                                         "mfu": tokens_per_second * per_token / peak if peak else None}
    return _tables(shape, batch, results, options)


def _fresh(device):
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def _model(setting):
    model = GPT(setting["shape"])
    model.load_state_dict(setting["initial"])
    return model


def _synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _bare_loop(setting, compiled: bool) -> float:
    device, steps, warmup = setting["device"], setting["steps"], setting["warmup"]
    model = _model(setting).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0, fused=device == "cuda")
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (steps - step) / steps))
    loader = torch.utils.data.DataLoader(setting["data"], batch_size=setting["batch"], shuffle=True,
                                         generator=torch.Generator().manual_seed(0), pin_memory=device == "cuda")
    forward = torch.compile(model, backend=setting["backend"], mode=setting["mode"]) if compiled else model
    model.train()
    step, start = 0, None
    while step < steps:
        for batch in loader:
            input_ids = batch["input_ids"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                loss = forward(input_ids=input_ids, labels=labels)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == warmup:
                _synchronize(device)
                start = time.perf_counter()
            if step == steps:
                break
    loss.item()  # sync: the bare loop reads its loss once, at the end
    _synchronize(device)
    return _tokens_per_second(setting, time.perf_counter() - start)


def _tokens_per_second(setting, seconds: float) -> float:
    measured = setting["steps"] - setting["warmup"]
    return measured * setting["batch"] * setting["shape"].positions / seconds


class _Clock:
    """Starts at the end of the warm-up steps, stops at the end of training (one sync at each)."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.start, self.seconds = warmup, device, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            _synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        _synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def _trainer_arguments(setting, compiled: bool, name: str) -> dict:
    cuda = setting["device"] == "cuda"
    options = dict(output_dir=os.path.join(setting["folder"], f"throughput-{name}"), report_to="none",
                   per_device_train_batch_size=setting["batch"], max_steps=setting["steps"], learning_rate=3e-4,
                   weight_decay=0.0, lr_scheduler_type="linear", max_grad_norm=1.0, bf16=True,
                   optim="adamw_torch_fused" if cuda else "adamw_torch", logging_steps=setting["steps"],
                   save_strategy="no", disable_tqdm=True, seed=0, use_cpu=not cuda)
    if compiled:
        options.update(torch_compile=True, torch_compile_backend=setting["backend"])
        if setting["mode"]:
            options["torch_compile_mode"] = setting["mode"]
    return options


def _raytrainer(setting, compiled, Trainer, TrainingArguments, TrainerCallback, train) -> float:
    clock = type("RaytrainerClock", (_Clock, TrainerCallback), {})(setting["warmup"], setting["device"])
    args = TrainingArguments(**_trainer_arguments(setting, compiled, "raytrainer"))
    trainer = Trainer(model=_model(setting), args=args, train_dataset=setting["data"], callbacks=[clock])
    train(trainer)
    return _tokens_per_second(setting, clock.seconds)


def _transformers(setting, compiled) -> float:
    import transformers

    clock = type("TransformersClock", (_Clock, transformers.TrainerCallback), {})(setting["warmup"], setting["device"])
    args = transformers.TrainingArguments(**_trainer_arguments(setting, compiled, "transformers"))
    trainer = transformers.Trainer(model=_model(setting), args=args, train_dataset=setting["data"], callbacks=[clock])
    trainer.train()
    return _tokens_per_second(setting, clock.seconds)


def _peak(device: str):
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((flops for marker, flops in _PEAK_BF16 if marker in name), None)


def _tables(shape, batch, results, options) -> dict:
    rows = []
    for (name, compiled), result in results.items():
        bare = results.get(("bare", compiled), {}).get("tokens_per_second")
        if "error" in result:
            rows.append([name, "yes" if compiled else "no", "-", "-", "-", result["error"]])
            continue
        mfu = "-" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
        rows.append([name, "yes" if compiled else "no", f"{result['tokens_per_second']:,.0f}", mfu,
                     f"{result['tokens_per_second'] / bare:.3f}" if bare else "-", ""])
    parameters = sum(p.numel() for p in GPT(shape).parameters())
    title = (f"Throughput: {parameters / 1e6:.1f}M-parameter decoder, {shape.positions} tokens x batch {batch}, bf16, "
             f"compile backend {options.compile_backend}")
    return {"title": title, "headers": ["loop", "compile", "tokens/s", "MFU", "vs bare", "note"], "rows": rows,
            "targets": _targets(results, options),
            "results": {f"{name}{'+compile' if compiled else ''}": r for (name, compiled), r in results.items()}}


def _targets(results, options) -> list:
    def value(name, compiled, key="tokens_per_second"):
        return results.get((name, compiled), {}).get(key)

    checks = []
    for compiled in (False, True):
        label = " with compile" if compiled else ""
        ours, bare, theirs = value("raytrainer", compiled), value("bare", compiled), value("transformers", compiled)
        if ours and bare:
            checks.append((f"raytrainer >= 0.97x bare loop{label}", f"{ours / bare:.3f}x", ours / bare >= 0.97))
        if ours and theirs:
            checks.append((f"raytrainer faster than transformers.Trainer{label}", f"{ours / theirs:.3f}x", ours > theirs))
    mfu = value("raytrainer", True, "mfu")
    if mfu is not None:
        checks.append(("raytrainer MFU with compile >= 40%", f"{100 * mfu:.1f}%", mfu >= 0.40))
    meaningful = not options.tiny
    return [{"target": target, "measured": measured,
             "status": ("ok" if passed else "FAIL") if meaningful else "n/a (--tiny)"}
            for target, measured, passed in checks]
