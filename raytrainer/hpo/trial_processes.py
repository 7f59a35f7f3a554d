"""Optuna trials side by side (``n_jobs`` > 1) without sharing one process's torch state.

Every trial seeds torch's default generator and draws from it (initial weights, dropout), and
that generator is one per process: two trials in two threads of one process would interleave
their draws (tests/test_hpo_concurrency.py). So a search with ``n_jobs`` > 1 trains at most one
trial in this process (it is warm: nothing to start) and every other one in a ``TrialProcess``, a
Ray actor on this machine that keeps its torch and the shipped Trainer blueprint between trials.

The Optuna study stays in the driver (its storage may be in memory). A trial in a process asks
the driver through its ``Mailbox`` (``hpo.relay``) whenever it needs the study: after each
evaluation (report, then should it stop?) and when ``model_init(trial)`` suggests a value. The
driver's Optuna thread serving that trial long-polls the mailbox, so an answer comes back within
one round trip.
"""

import dataclasses
import os
import queue
import threading
import traceback

import ray
import torch

from .relay import Mailbox
from .runner import run_trial

_POLL_S = 1.0  # how long one driver poll waits for a question (the trial's end wakes it at once)


class MailboxReporter:
    """Reports an evaluation to the driver's Optuna trial and stops when the pruner says so."""

    def __init__(self, mailbox: Mailbox):
        self.mailbox = mailbox

    def report(self, trainer, step, values, metrics):
        import optuna

        if self.mailbox.ask(("report", step, list(values))):
            raise optuna.TrialPruned(f"pruned at step {step} with objective {values[0]:.6g}")


class RemoteTrial:
    """What ``model_init(trial)`` receives in a trial process: the trial's number and parameters,
    and ``suggest_*`` answered by the driver's ``optuna.Trial`` (so a value model_init samples is
    part of the study, as it is for a trial in the driver)."""

    def __init__(self, mailbox: Mailbox, number: int, params: dict):
        self._mailbox = mailbox
        self.number = number
        self.params = dict(params)

    def _ask(self, method: str, name: str, *args, **kwargs):
        value = self._mailbox.ask(("suggest", method, name, args, kwargs))
        if isinstance(value, _Failure):
            raise value.error
        self.params[name] = value
        return value

    def suggest_float(self, name, *args, **kwargs):
        return self._ask("suggest_float", name, *args, **kwargs)

    def suggest_int(self, name, *args, **kwargs):
        return self._ask("suggest_int", name, *args, **kwargs)

    def suggest_categorical(self, name, *args, **kwargs):
        return self._ask("suggest_categorical", name, *args, **kwargs)


class _Failure:
    """An exception the driver's trial raised, carried back to the trial's process."""

    def __init__(self, error: Exception):
        self.error = error


@ray.remote(num_cpus=1, max_concurrency=3)  # threads: the trial's training, a driver poll, an answer
class TrialProcess:
    """One process that trains trials one after another, for the driver's Optuna threads."""

    def __init__(self, setup):
        self.setup = setup
        self._mailboxes = {}
        self._lock = threading.Lock()

    def _mailbox(self, trial_id: str) -> Mailbox:
        with self._lock:
            return self._mailboxes.setdefault(trial_id, Mailbox())

    def run(self, trial, number: int):
        """``("complete", record)``, ``("pruned", message)`` or ``("failed", message)``."""
        import optuna

        mailbox = self._mailbox(trial.trial_id)
        trial.reporter = MailboxReporter(mailbox)
        trial.user_trial = RemoteTrial(mailbox, number, trial.hyperparameters)
        try:
            return "complete", run_trial(self.setup, trial)
        except optuna.TrialPruned as pruned:
            return "pruned", str(pruned)
        except Exception as error:  # noqa: BLE001 - the driver's Optuna records the trial as failed
            return "failed", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        finally:
            mailbox.close()

    def questions(self, trial_id: str, timeout: float):
        questions, closed = self._mailbox(trial_id).take(timeout)
        if closed:
            with self._lock:
                self._mailboxes.pop(trial_id, None)
        return questions, closed

    def answer(self, trial_id: str, ticket: int, value) -> None:
        self._mailbox(trial_id).answer(ticket, value)


class TrialProcessFailed(RuntimeError):
    """A trial failed in its process (the message carries that process's traceback)."""


class TrialSlots:
    """Where the next trial trains: this process (one trial at a time) or a free trial process.
    Trial processes start when the search does, on this machine (the trials' folders are local)."""

    _HERE = "this process"
    train_here = True  # tests switch it off to send every trial to a trial process

    def __init__(self, setup, slots: int):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._free = queue.Queue()
        if self.train_here:
            self._free.put(self._HERE)  # first: it needs no start-up
        cpus = _cpus_of_this_node()
        count = max(0 if self.train_here else 1, min(slots - self.train_here, cpus - self.train_here))
        # each trial process trains on one core (Ray's OMP_NUM_THREADS for a 1-CPU actor); the trial
        # here gets what the processes leave, not every core on top of them
        self._threads = torch.get_num_threads()
        if count:
            torch.set_num_threads(max(1, min(self._threads, cpus - count)))
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        shipped = ray.put(setup) if count else None
        self.processes = [TrialProcess.options(scheduling_strategy=here).remote(shipped) for _ in range(count)]
        for process in self.processes:
            self._free.put(process)

    def run(self, setup, trial, optuna_trial):
        """Train ``trial`` in the first free slot; returns its record, raises ``TrialPruned`` (or
        ``TrialProcessFailed``) as a trial in this process would."""
        slot = self._free.get()
        if slot is self._HERE:
            try:
                return run_trial(setup, trial)
            finally:
                self._free.put(slot)
        alive = True
        try:
            return _serve(slot, trial, optuna_trial)
        except ray.exceptions.RayActorError as error:  # the process died: later trials go elsewhere
            alive = False
            raise TrialProcessFailed(f"trial {optuna_trial.number} ({trial.run_name}): its process died: "
                                     f"{error}") from error
        finally:
            if alive:
                self._free.put(slot)

    def close(self) -> None:
        for process in self.processes:
            ray.kill(process)
        torch.set_num_threads(self._threads)


def _serve(process, trial, optuna_trial):
    import optuna

    # the driver's reporter holds the optuna.Trial, which stays here
    outcome = process.run.remote(dataclasses.replace(trial, reporter=None), optuna_trial.number)
    closed = False
    while not closed:
        questions, closed = ray.get(process.questions.remote(trial.trial_id, _POLL_S))
        for ticket, question in questions:
            process.answer.remote(trial.trial_id, ticket, _answer(question, trial, optuna_trial))
    status, result = ray.get(outcome)
    if status == "pruned":
        raise optuna.TrialPruned(result)
    if status == "failed":
        raise TrialProcessFailed(f"trial {optuna_trial.number} ({trial.run_name}) failed in its process: {result}")
    return result


def _answer(question, trial, optuna_trial):
    """The driver's answer: a report (and whether to prune), or a value ``model_init`` suggests."""
    kind = question[0]
    if kind == "report":
        _, step, values = question
        return trial.report_from_elsewhere(optuna_trial, step, values)
    _, method, name, args, kwargs = question
    try:
        return getattr(optuna_trial, method)(name, *args, **kwargs)
    except Exception as error:  # noqa: BLE001 - raised again in model_init, where the user called it
        return _Failure(error)


def _cpus_of_this_node() -> int:
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return int(node.get("Resources", {}).get("CPU", 0))
    return os.cpu_count() or 1
