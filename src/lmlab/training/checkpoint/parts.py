"""What a checkpoint's trainer state holds, assembled from named stateful parts (as torchtitan's
CheckpointManager does): the trainer's progress, the optimizer, the random states, the weight average and
each callback, every one with `state_dict()` / `load_state_dict()`. The trainer registers its parts; it
does not need to know what each keeps.

Callbacks are keyed by name (`callback.name`, else the class name), not by position, so a process that
runs fewer callbacks (a rank that writes no files) or a resume with other callbacks takes back exactly the
states whose names it has, and the others are left alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

FORMAT = 2


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class StateOf:
    """A stateful part made of two functions, for state that lives in plain attributes."""

    def __init__(self, get: Callable[[], Any], set_: Callable[[Any], None]):
        self.state_dict, self.load_state_dict = get, set_


def callback_names(callbacks: Sequence[Any]) -> list[str]:
    """Each callback's name; repeats of one name get #2, #3, ... in order."""
    names, seen = [], {}
    for callback in callbacks:
        name = getattr(callback, "name", None) or type(callback).__name__
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


class CallbackStates:
    """All callbacks as one part: {name: state} in a JSON string (weights_only loading takes plain data)."""

    def __init__(self, callbacks: Sequence[Any]):
        self.callbacks = callbacks

    def state_dict(self) -> str:
        return json.dumps({name: cb.state_dict() for name, cb in zip(callback_names(self.callbacks),
                                                                          self.callbacks, strict=True)})

    def load_state_dict(self, state: str) -> None:
        saved = json.loads(state)
        if isinstance(saved, list):  # format 1 kept callbacks by position
            saved = dict(zip(callback_names(self.callbacks), saved, strict=False))
        for name, callback in zip(callback_names(self.callbacks), self.callbacks, strict=True):
            if name in saved:
                callback.load_state_dict(saved[name])


class Checkpointer:
    """Named parts -> one trainer-state dict, and back. `step` is also kept at the top level, where the
    two-file commit in checkpoint.py checks that weights and state belong together."""

    def __init__(self) -> None:
        self.parts: dict[str, Stateful] = {}

    def register(self, name: str, part: Stateful) -> None:
        self.parts[name] = part

    def state_dict(self, step: int, **extra: Any) -> dict[str, Any]:
        return {"format": FORMAT, "step": step, **{name: p.state_dict() for name, p in self.parts.items()},
                **extra}

    def load_state_dict(self, state: dict[str, Any], skip: Sequence[str] = ()) -> None:
        """Give each registered part its saved state; parts the checkpoint lacks keep their fresh state."""
        state = upgrade(state)
        for name, part in self.parts.items():
            if name in skip:
                continue
            if name in state and state[name] is not None:
                part.load_state_dict(state[name])
            else:
                log.debug("checkpoint has no %r state; it starts fresh", name)


PROGRESS_KEYS = ("step", "tokens_seen", "nonfinite_steps", "train_seconds", "last_val_loss", "lr_scale",
                 "last_eval_step")


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 state (flat keys, as written before the checkpointer) in today's layout."""
    if state.get("format", 1) >= FORMAT:
        return state
    upgraded = {k: v for k, v in state.items() if k not in PROGRESS_KEYS}
    upgraded["progress"] = {k: state.get(k) for k in PROGRESS_KEYS}
    upgraded["progress"]["lr_scale"] = state.get("lr_scale", 1.0)
    if "raw_weights" in state:
        upgraded["average"] = upgraded.pop("raw_weights")
    upgraded.update(format=FORMAT, step=state["step"])
    return upgraded
