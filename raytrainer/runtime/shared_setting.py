"""A setting of this whole process that runs side by side share (Optuna's ``n_jobs`` trains trials
in threads of one process): applied when the first of them starts, undone when the last one ends,
so no run undoes it under another that is still running."""

import contextlib
import threading
from typing import Any, Callable


class SharedSetting:
    """``apply()`` returns what ``undo(token)`` needs to put things back as they were."""

    def __init__(self, apply: Callable[[], Any], undo: Callable[[Any], None]):
        self._apply, self._undo = apply, undo
        self._lock = threading.Lock()
        self._runs = 0
        self._token = None

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._runs == 0:
                self._token = self._apply()
            self._runs += 1
        try:
            yield
        finally:
            with self._lock:
                self._runs -= 1
                if self._runs == 0:
                    self._undo(self._token)
                    self._token = None
