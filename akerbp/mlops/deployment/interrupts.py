"""Ctrl-C and SIGTERM during a deploy: stop at a safe point, never between deleting a live function and proving
its replacement.

A first SIGINT/SIGTERM only asks to stop: the deploy notices it at its next check (between phases, while waiting
for CDF) and raises Interrupted there. Inside `shielded()` (from the moment a live function is deleted until the
new code passed its smoke check or was rolled back) checks do not raise: that step is finished first, so what is
live is verified. A second signal stops at once (KeyboardInterrupt / SystemExit); the next deploy then verifies
or rolls back what is live (release.is_verified). SIGKILL cannot be handled: the same recovery covers it.
Handlers are installed only in the main thread of the process that runs the deploy (the CLI); elsewhere (a deploy
inside a CDF Function, a test calling deploy()) nothing is installed and checks never raise. Models deploying
concurrently (threads) share the stop request; a shield holds back only the checks of the thread that holds it.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator

from akerbp.mlops.errors import MlopsError

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it


class Interrupted(MlopsError):
    """The deploy was asked to stop (SIGINT/SIGTERM) and stopped at a safe point."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 130)
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


class _State:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.shield = 0  # shielded steps in progress, in all threads (models deploy concurrently)
        self.lock = threading.Lock()
        self.local = threading.local()  # .shield: this thread's, which decides whether its checks raise


_state = _State()


def requested() -> int | None:
    """The signal that asked the deploy to stop, if one did."""
    return _state.signum


def check(where: str = "") -> None:
    """Raise Interrupted if a stop was asked for and no step in progress must be finished first."""
    if _state.signum is not None and getattr(_state.local, "shield", 0) == 0:
        raise Interrupted(_state.signum, f"interrupted by {signal.Signals(_state.signum).name}"
                                         + (f" {where}" if where else ""))


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A step that must be finished once started: checks inside it (in this thread) do not raise."""
    with _state.lock:
        _state.shield += 1
    _state.local.shield = getattr(_state.local, "shield", 0) + 1
    try:
        yield
    finally:
        _state.local.shield -= 1
        with _state.lock:
            _state.shield -= 1


@contextlib.contextmanager
def handled(say: Callable[[str], None]) -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for the duration of a deploy (main thread only), then restore them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in EXIT_CODES}

    def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        if _state.signum is not None:  # the second one: stop now
            say(f"{signal.Signals(signum).name} again: stopping at once; the next deploy verifies or rolls back "
                "what is live")
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            sys.exit(EXIT_CODES[signum])
        _state.signum = signum
        if _state.shield:
            say(f"{signal.Signals(signum).name}: finishing the step in progress (the new code is being put live and "
                "checked, or rolled back) before stopping; send it again to stop at once")
        else:
            say(f"{signal.Signals(signum).name}: stopping at the next safe point (send it again to stop at once)")

    for s in EXIT_CODES:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.signum = None
