"""``skip_memory_metrics=False``: how much memory each stage of a Trainer used, under HF's names.

For a stage (``init``, ``train``, ``eval``, ``test``) two numbers per device kind, in bytes:
``<stage>_mem_<cpu|gpu>_alloc_delta`` (memory held at the end minus at the start) and
``<stage>_mem_<cpu|gpu>_peaked_delta`` (how far the peak during the stage rose above the end).
Their sum is what the stage needed at its worst. The first report also carries the ``init``
stage and ``before_init_mem_cpu``/``before_init_mem_gpu``, the memory in use before the Trainer
existed. CPU figures are the process's resident set (psutil); GPU figures are torch's CUDA
allocator (``memory_allocated``/``max_memory_allocated``), reported when CUDA is available.

The CPU peak comes from the kernel's own high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) where Linux provides it; elsewhere a thread samples the resident set
every millisecond. An evaluation inside ``train()`` is part of the train stage, not a stage of
its own.
"""

import gc
import re
import threading

_HWM_PATTERN = re.compile(r"VmHWM:\s+(\d+) kB")


class _CpuPeak:
    """The peak resident set between ``start()`` and ``stop()``."""

    def __init__(self, process):
        self.process = process
        self._sampler = None

    def start(self) -> None:
        if _reset_kernel_peak():
            self._sampler = None
            return
        self._peak, self._running = self.process.memory_info().rss, True
        self._sampler = threading.Thread(target=self._sample, name="raytrainer-memory", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        import time

        while self._running:
            self._peak = max(self._peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> int:
        if self._sampler is None:
            return _kernel_peak()
        self._running = False
        self._sampler.join()
        return max(self._peak, self.process.memory_info().rss)


def _reset_kernel_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak resident set size (Linux >= 4.0)
        return _kernel_peak() is not None
    except OSError:
        return False


def _kernel_peak():
    try:
        with open("/proc/self/status") as f:
            match = _HWM_PATTERN.search(f.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class MemoryTracker:
    """One per Trainer. ``start(stage)`` / ``stop_and_update_metrics(stage, metrics)`` bracket a
    stage; with ``skip_memory_metrics=True`` both do nothing."""

    def __init__(self, skip_memory_metrics: bool = True):
        self.skip = skip_memory_metrics
        if self.skip:
            return
        import psutil
        import torch

        self.torch = torch
        self.cpu_peak = _CpuPeak(psutil.Process())
        self.current_stage = None
        self.measured = {}  # stage -> {"cpu": (begin, end, peak), "gpu": (begin, end, peak)}
        self.init_reported = False

    def _gpu(self) -> bool:
        return self.torch.cuda.is_available()

    def start(self, stage: str) -> None:
        if self.skip:
            return
        self.current_stage = stage
        gc.collect()
        self._begin = {"cpu": self.cpu_peak.process.memory_info().rss}
        if self._gpu():
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
            self._begin["gpu"] = self.torch.cuda.memory_allocated()
        self.cpu_peak.start()

    def stop(self, stage: str) -> bool:
        """End ``stage``; False when it was not the running one (an evaluation inside training)."""
        if self.skip or self.current_stage != stage:
            return False
        peak = self.cpu_peak.stop()
        gc.collect()
        end = self.cpu_peak.process.memory_info().rss
        self.measured[stage] = {"cpu": (self._begin["cpu"], end, max(peak, end))}
        if self._gpu():
            self.torch.cuda.empty_cache()
            end_gpu = self.torch.cuda.memory_allocated()
            self.measured[stage]["gpu"] = (self._begin["gpu"], end_gpu,
                                           max(self.torch.cuda.max_memory_allocated(), end_gpu))
        self.current_stage = None
        return True

    def update_metrics(self, stage: str, metrics: dict) -> None:
        if self.skip or stage not in self.measured:
            return
        stages = [stage]
        if not self.init_reported and "init" in self.measured:
            stages.insert(0, "init")
            self.init_reported = True
            for kind, (begin, _, _) in self.measured["init"].items():
                metrics[f"before_init_mem_{kind}"] = begin
        for name in stages:
            for kind, (begin, end, peak) in self.measured[name].items():
                metrics[f"{name}_mem_{kind}_alloc_delta"] = end - begin
                metrics[f"{name}_mem_{kind}_peaked_delta"] = max(0, peak - end)

    def stop_and_update_metrics(self, stage: str, metrics=None) -> None:
        if self.stop(stage) and metrics is not None:
            self.update_metrics(stage, metrics)
