"""Putting the ``stateful_callbacks`` of a checkpoint back into the callbacks of a resumed run.

The live callback objects are updated in place (a notebook's references to them stay valid). A
class with several instances is matched instance by instance: a saved state goes first to the
callback built with the same constructor arguments, the rest in order, so two early stoppers
with different patience each get their own counter back even if the new run lists them in
another order. States the new run has no callback for are reported, never silently dropped.
"""

import logging

from ..state import TrainerControl

logger = logging.getLogger("raytrainer")


def restore_callback_states(trainer, states: dict) -> None:
    not_found = []
    for name, saved in states.items():
        saved_list = saved if isinstance(saved, list) else [saved]
        if name == TrainerControl.__name__:
            trainer.control = TrainerControl(**saved_list[0]["args"])
            continue
        live = [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == name]
        if not live:
            not_found.append(name)
            continue
        pairs, left_over = _pair_states(live, saved_list)
        for callback, state in pairs:
            for key, value in {**state.get("args", {}), **state.get("attributes", {})}.items():
                setattr(callback, key, value)
        if left_over:
            logger.warning("The checkpoint holds %d %s states but this run has %d %s callback(s); %d state(s) "
                           "were not restored.", len(saved_list), name, len(live), name, len(left_over))
    if not_found:
        logger.warning("The checkpoint holds the state of callbacks this run does not have, so it is ignored: %s. "
                       "Add those callbacks to the Trainer to restore them.", ", ".join(not_found))


def _pair_states(live: list, saved: list):
    """``[(callback, state)]`` and the saved states no callback took: equal constructor arguments
    first, then the remaining ones in order."""
    remaining = list(saved)
    pairs, unmatched = [], []
    for callback in live:
        args = _constructor_args(callback)
        match = next((state for state in remaining if args is not None and state.get("args") == args), None)
        if match is None:
            unmatched.append(callback)
        else:
            remaining.remove(match)
            pairs.append((callback, match))
    for callback in unmatched:
        if remaining:
            pairs.append((callback, remaining.pop(0)))
    return pairs, remaining


def _constructor_args(callback):
    try:
        return callback.state().get("args")
    except Exception:  # noqa: BLE001 - a state() that fails is matched by position instead
        return None
