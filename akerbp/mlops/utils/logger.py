"""The framework's logger, and the registry of secret values that must never reach a log line or a message.

The registry lives here, not in cdf/client.py, so code running inside a CDF Function (services/) can mask secrets
without importing the CDF client module.

    from akerbp.mlops.utils import logger
    log = logger.get_logger()
    log.info("hello")
"""
from __future__ import annotations

from akerbp.mlops.vocabulary import SECRET_ENV_PREFIX as SECRET_PREFIX
import logging
import os
import re
import sys
import threading

BASE = "akerbp.mlops"
LEVEL_VAR = "MLOPS_LOG_LEVEL"
# Environment variables whose values are always secret, read at masking time so a value set later is still masked.
SECRET_VARS = ("COGNITE_CLIENT_SECRET",)
# Shorter values are not masked: replacing every "ab" in a log would garble it while hiding nothing of worth.
MIN_SECRET_LENGTH = 4
MASK = "***"

_registered: set[str] = set()
_lock = threading.Lock()
_pattern_cache: tuple[frozenset[str], re.Pattern | None] = (frozenset(), None)
_configured = False


def register_secret(value: str | None) -> None:
    """Mask `value` in every later log record and in `mask()`; e.g. a secret read from a settings-named variable."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value)


def _current_secrets() -> frozenset[str]:
    values = set(_registered)
    for name, value in os.environ.items():
        if name in SECRET_VARS or name.startswith(SECRET_PREFIX):
            values.add(value)
    return frozenset(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def mask(text: str) -> str:
    """`text` with COGNITE_CLIENT_SECRET, every MLOPS_SECRET_* value and every registered value replaced by ***."""
    global _pattern_cache
    if not text:
        return text
    secrets = _current_secrets()
    if not secrets:
        return text
    cached_for, pattern = _pattern_cache
    if cached_for != secrets or pattern is None:  # None: nothing compiled yet
        # Longest first, so a secret containing another is masked whole.
        alternatives = sorted(secrets, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(s) for s in alternatives))
        _pattern_cache = (secrets, pattern)
    return pattern.sub(MASK, text)


class SecretFilter(logging.Filter):
    """Masks secrets in a record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


class _MaskingFormatter(logging.Formatter):
    """Second line of defence: masks the final line, whatever a record carried."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr, so redirections made after set-up (click's CliRunner, pytest) are honoured."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


_FILTER = SecretFilter()


def _level_from_env() -> tuple[int, str | None]:
    raw = os.environ.get(LEVEL_VAR, "").strip().upper()
    if not raw:
        return logging.INFO, None
    level = logging.getLevelName(raw)
    if isinstance(level, int):
        return level, None
    return logging.INFO, f"{LEVEL_VAR}={raw!r} is not a log level (use DEBUG, INFO, WARNING or ERROR); using INFO"


def _configure() -> None:
    global _configured
    with _lock:
        if _configured:
            return
        base = logging.getLogger(BASE)
        handler = _StderrHandler()
        handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(_FILTER)
        base.addHandler(handler)
        level, problem = _level_from_env()
        base.setLevel(level)
        _configured = True
    if problem:
        base.warning(problem)


def get_logger(name: str | None = None) -> logging.Logger:
    """The "akerbp.mlops" logger, or a child of it (`get_logger(__name__)` in framework and model code alike).

    Logs go to stderr at MLOPS_LOG_LEVEL (default INFO); records still propagate, so pytest's caplog and an
    application's own handlers see them, already masked.
    """
    _configure()
    if not name or name == BASE:
        full = BASE
    elif name.startswith(BASE + "."):
        full = name
    else:
        full = f"{BASE}.{name}"
    log = logging.getLogger(full)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
