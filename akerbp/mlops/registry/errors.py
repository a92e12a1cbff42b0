"""What can go wrong in the registry, one class per cause, so callers test the class instead of a message or
`__cause__`. Each is an MlopsError (exit 1) or UsageError (exit 2): the exit code stays on the class, as the CLI maps
it (errors.py, cli/__init__.py)."""
from __future__ import annotations

from akerbp.mlops.errors import MlopsError, UsageError


class RegistryRequestFailed(MlopsError):
    """CDF did not answer a registry request (network, 5xx after the SDK's retries, refused): nothing is known about
    the versions, so no advice about them applies. The SDK's exception is its __cause__."""


class VersionUnavailable(MlopsError):
    """The version asked for cannot be served; the subclass says why and the message how to get one."""


class VersionNotFound(VersionUnavailable):
    """No such version number, or no version at all in the environment."""


class VersionDeleted(VersionUnavailable):
    """The version was deleted: a tombstone keeps its number taken."""


class VersionIncomplete(VersionUnavailable):
    """The version's upload is still running or was interrupted."""


class ChecksumMismatch(MlopsError):
    """A downloaded archive's sha256 differs from the one recorded at upload: it was modified. Nothing extracted."""


class UnsafeArchive(MlopsError):
    """An archive holds an entry that could write outside its folder, or more than the extraction limits."""


class UploadFailed(MlopsError):
    """A claimed version number's content did not arrive: the number became a tombstone (or stays unfinished)."""


class PromotionConflict(MlopsError):
    """The promotion's target number is taken by other bytes or by a tombstone: it is never overwritten."""


class ProdUploadRefused(UsageError):
    """prod takes versions only by promotion (or a training service whose deployment condition is met)."""


__all__ = ["RegistryRequestFailed", "VersionUnavailable", "VersionNotFound", "VersionDeleted", "VersionIncomplete",
           "ChecksumMismatch", "UnsafeArchive", "UploadFailed", "PromotionConflict", "ProdUploadRefused"]
