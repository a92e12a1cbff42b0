"""The function's own secret values, masked in what a call returns and in what it writes through Python.

A model sees its secrets in plain text (it needs them) and may print, log or return them; CDF stores the call's
output as its logs and its answer as the response, both readable by anyone who may read the function. Inside the
function the services mask every secret value (and any value the framework logger knows) as `***`:
- in the answer, every string of it (keys included), and the training metadata before it is uploaded;
- in sys.stdout and sys.stderr during the call, line by line, so print(), logging and tracebacks are masked.
Not covered: writes below Python (os.write(1, ...), C extensions, subprocesses: they reach the file descriptors
directly), sys.stdout.buffer, anything derived from a secret (base64, reversed, hashed, split over lines, a part of
it), secrets shorter than MIN_SECRET_LENGTH, values that are not text, files the model writes, and output of threads
still running after the call ended.
"""
from __future__ import annotations

import re
import sys
import threading
import types
from contextlib import contextmanager
from typing import Any

_framework_logger: types.ModuleType | None
try:  # bundled in the function folder; guarded so a service still answers if it is not
    from akerbp.mlops.utils import logger as _framework_logger
except ImportError:  # pragma: no cover - depends on what the deploy step bundles
    _framework_logger = None

MIN_SECRET_LENGTH = getattr(_framework_logger, "MIN_SECRET_LENGTH", 4)  # shorter values are not masked
MASK = "***"
LINE_LIMIT = 64 * 1024  # a line longer than this is masked and written in pieces


def masker(secrets: dict | None):
    """A function masking the call's secret values (and any secret the framework logger knows) in a text; None when
    the call has no secret long enough to mask."""
    distinct = {str(v) for v in (secrets or {}).values() if v is not None}
    values = sorted((v for v in distinct if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)  # longest first
    if not values:
        return None
    pattern = re.compile("|".join(map(re.escape, values)))
    framework_mask = getattr(_framework_logger, "mask", None) or (lambda text: text)
    return lambda text: framework_mask(pattern.sub(MASK, text))


def mask(text: str, secrets: dict | None) -> str:
    """`text` without the call's secret values (and without any secret the framework logger knows)."""
    hide = masker(secrets)
    if hide is not None:
        return hide(text)
    framework_mask = getattr(_framework_logger, "mask", None)
    return framework_mask(text) if framework_mask is not None else text


def mask_value(value, secrets: dict | None):
    """A copy of a JSON-like answer with every string (keys too) masked; the model's own objects are not changed.
    Iterative: an answer may be nested as deep as JSON carries it."""
    hide = masker(secrets)
    if hide is None:
        return value

    def fix(item):
        return hide(item) if isinstance(item, str) else item

    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]  # (a dict or list of the copy, a key or index in it)
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = fix(item)
        elif isinstance(item, dict):
            as_dict = {fix(k): v for k, v in item.items()}
            container[key] = as_dict
            stack.extend((as_dict, k) for k, v in as_dict.items() if isinstance(v, (str, dict, list, tuple)))
        elif isinstance(item, (list, tuple)):
            as_list = list(item)
            container[key] = as_list
            stack.extend((as_list, i) for i, v in enumerate(as_list) if isinstance(v, (str, dict, list, tuple)))
    return root[0]


class MaskedStream:
    """A text stream that writes whole lines, masked, to `stream`; flush() writes a pending partial line.

    Whole lines, because print("key:", secret) reaches the stream as separate writes. Everything else (encoding,
    fileno, isatty, buffer...) is the wrapped stream's.
    """

    def __init__(self, stream, hide):
        self._stream, self._hide = stream, hide
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text):
        if not isinstance(text, str):
            return self._stream.write(text)  # let the stream raise its own TypeError
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                lines, _, self._pending = self._pending.rpartition("\n")
                self._stream.write(self._hide(lines + "\n"))
            if len(self._pending) > LINE_LIMIT:
                self._stream.write(self._hide(self._pending))
                self._pending = ""
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._stream.write(self._hide(self._pending))
                self._pending = ""
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def masked_output(secrets: dict | None):
    """sys.stdout and sys.stderr masked during one call; the streams in place before are restored after it."""
    hide = masker(secrets)
    if hide is None:
        yield
        return
    saved = sys.stdout, sys.stderr
    out, err = MaskedStream(saved[0], hide), MaskedStream(saved[1], hide)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        for stream in (out, err):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not turn an answer into a crash
                pass
        if sys.stdout is out:
            sys.stdout = saved[0]
        if sys.stderr is err:
            sys.stderr = saved[1]
