"""Pruning for Optuna trials that train on Ray Train workers.

The Optuna trial lives in the driver (its storage may be in memory), the evaluations happen on the
workers. After each evaluation rank 0 asks a ``PruningRelay`` actor, and blocks; a thread in the
driver (``RelayServer``) takes the question, reports it to Optuna and answers with
``should_prune()``. Evaluations are rare, so one round trip each is cheap.
"""

import threading

import ray

_ANSWER_TIMEOUT_S = 600.0  # a driver that stopped answering must not hang the workers forever


@ray.remote(num_cpus=0, max_concurrency=4)
class PruningRelay:
    def __init__(self):
        self._condition = threading.Condition()
        self._questions = []
        self._answers = {}
        self._closed = False

    def ask(self, step: int, values: list) -> bool:
        with self._condition:
            self._questions.append((step, values))
            self._condition.notify_all()
            self._condition.wait_for(lambda: step in self._answers or self._closed, timeout=_ANSWER_TIMEOUT_S)
            return self._answers.pop(step, False)

    def next_questions(self, timeout: float) -> list:
        with self._condition:
            self._condition.wait_for(lambda: self._questions or self._closed, timeout=timeout)
            questions, self._questions = self._questions, []
            return questions

    def answer(self, step: int, prune: bool) -> None:
        with self._condition:
            self._answers[step] = prune
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


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
            for step, values in questions:
                self.relay.answer.remote(step, self._decide(step, values))

    def _decide(self, step: int, values: list) -> bool:
        self.search_trial.history.append((step, values))
        if len(values) > 1:
            return False
        self.optuna_trial.report(values[0], step)
        return self.optuna_trial.should_prune()
