"""Questions from a trial that trains away from the driver, answered by the driver's Optuna trial.

The Optuna study lives in the driver (its storage may be in memory); a trial training in another
process asks it whether to prune after an evaluation, or for a value ``model_init`` suggests. A
``Mailbox`` holds the questions and answers in the asking process; a driver thread long-polls it,
so an answer comes back within one round trip. Trials on Ray Train workers ask a ``PruningRelay``
actor (a mailbox every rank 0 can reach), served by ``RelayServer``; trials in trial processes ask
their process's own mailbox (``hpo.trial_processes``).
"""

import itertools
import threading

import ray


_ANSWER_TIMEOUT_S = 600.0  # a driver that stopped answering must not hang the workers forever


class Mailbox:
    """Questions of one trial to the driver, and their answers (thread-safe, in the asking process)."""

    def __init__(self):
        self._condition = threading.Condition()
        self._questions = []
        self._answers = {}
        self._tickets = itertools.count()
        self.closed = False

    def ask(self, question, timeout=None, unanswered=None):
        """The driver's answer; ``unanswered`` when the mailbox closes or ``timeout`` passes first."""
        with self._condition:
            ticket = next(self._tickets)
            self._questions.append((ticket, question))
            self._condition.notify_all()
            self._condition.wait_for(lambda: ticket in self._answers or self.closed, timeout=timeout)
            return self._answers.pop(ticket, unanswered)

    def take(self, timeout: float):
        """``(questions, closed)``: what was asked since the last call, as ``(ticket, question)``
        pairs, waiting up to ``timeout`` for a first question or for the mailbox to close."""
        with self._condition:
            self._condition.wait_for(lambda: self._questions or self.closed, timeout=timeout)
            questions, self._questions = self._questions, []
            return questions, self.closed

    def answer(self, ticket: int, value) -> None:
        with self._condition:
            self._answers[ticket] = value
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self.closed = True
            self._condition.notify_all()


@ray.remote(num_cpus=0, max_concurrency=4)
class PruningRelay:
    """Rank 0 of a trial's workers asks here whether to prune; a closed relay says no."""

    def __init__(self):
        self._mailbox = Mailbox()

    def ask(self, step: int, values: list) -> bool:
        return self._mailbox.ask((step, values), timeout=_ANSWER_TIMEOUT_S, unanswered=False)

    def next_questions(self, timeout: float) -> list:
        return self._mailbox.take(timeout)[0]

    def answer(self, ticket: int, prune: bool) -> None:
        self._mailbox.answer(ticket, prune)

    def close(self) -> None:
        self._mailbox.close()


class RelayServer:
    """Answers the workers' questions for one trial while it trains (a context manager)."""

    def __init__(self, optuna_trial, search_trial, poll_s: float = 0.5):
        self.optuna_trial = optuna_trial
        self.search_trial = search_trial
        self.poll_s = poll_s
        self.relay = PruningRelay.remote()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="raytrainer-pruning-relay", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.relay.close.remote()
        self._thread.join()
        ray.kill(self.relay)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                questions = ray.get(self.relay.next_questions.remote(self.poll_s))
            except ray.exceptions.RayError:
                return
            for ticket, (step, values) in questions:
                prune = self.search_trial.report_from_elsewhere(self.optuna_trial, step, values)
                self.relay.answer.remote(ticket, prune)
