"""Where raytrainer's log records go. ``log_level`` sets the level of the ``raytrainer`` logger (as
HF's does for ``transformers``); for ``log_level="info"`` to show anything in a script that never
configured logging, the logger also gets a handler of last resort that prints to stderr while the
root logger has no handler. Once the application configures logging (``basicConfig``, a test
runner), records reach it through propagation only, so nothing is printed twice."""

import logging

logger = logging.getLogger("raytrainer")


class _UnconfiguredLoggingHandler(logging.StreamHandler):
    """Prints the message alone (like Python's last-resort handler) when the root logger has no
    handler of its own, whatever the level of the record."""

    def emit(self, record) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def apply_log_level(args) -> None:
    """The level of this process (``log_level``, or ``log_level_replica`` on replicas; ``passive``
    keeps the level set on the ``raytrainer`` logger), and the fallback handler installed once.

    A logger nobody set starts at WARNING, like HF's library logger: a root logger at INFO (a Ray
    worker process configures one) must not make the library print its INFO lines."""
    name = args.log_level if args.should_log else args.log_level_replica
    if name == "passive" and logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    else:
        logger.setLevel(args.get_process_log_level())
    if not any(isinstance(handler, _UnconfiguredLoggingHandler) for handler in logger.handlers):
        logger.addHandler(_UnconfiguredLoggingHandler())
