"""Where the registry's versions are (ids, markers, data set) and which is the latest, without listing them all.

Version N of a model in an environment is the CDF file with external id `{model}/{env}/{N}`. Numbers can be sparse
(promotion keeps N), so each (model, env) also keeps dense *block markers*: the file `mlops-index/{model}/{env}/{k}`
exists for every k <= max_version // BLOCK, created before any version in block k. The latest version is found by
probing for the highest marker in one `files/byids` request (exponential/binary search beyond DENSE_MARKERS), then
probing the ids of that block downwards: 2 requests up to 25,600 versions, whatever the total.

Part of the registry package bundled into deployed CDF Functions: stdlib, cognite-sdk, errors and vocabulary only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cognite.client.exceptions import CogniteDuplicatedError

from akerbp.mlops.errors import MlopsError
from akerbp.mlops.vocabulary import index_marker_external_id as marker_xid
from akerbp.mlops.vocabulary import version_external_id as version_xid

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata

__all__ = ["INDEX_DIRECTORY", "BLOCK", "DENSE_MARKERS", "MAX_PROBE", "marker_xid", "version_xid", "is_tombstone",
           "is_ready", "usable", "probe", "highest_marker", "scan_down", "latest_file", "ensure_data_set", "ensure_markers"]

INDEX_DIRECTORY = "/mlops/index"
BLOCK = 100  # versions per block marker
DENSE_MARKERS = 256  # markers probed one by one in the first request
MAX_PROBE = 1000  # ids per files/byids request (the API limit)


def is_tombstone(f: FileMetadata) -> bool:
    """A deleted version: its number stays taken (metadata deleted="true", no content)."""
    return (f.metadata or {}).get("deleted") == "true"


def usable(uploaded: object, metadata: dict[str, str] | None) -> bool:
    """The rule of is_ready over a file's fields, for callers holding the file's JSON (the dashboard's listing)."""
    return bool(uploaded) and (metadata or {}).get("deleted") != "true"


def is_ready(f: FileMetadata) -> bool:
    """A usable version: fully uploaded and not deleted."""
    return usable(f.uploaded, f.metadata)


def probe(client: CogniteClient, xids: list[str]) -> dict[str, FileMetadata]:
    """The files among `xids` that exist, by external id, in as few requests as the API allows."""
    found: dict[str, FileMetadata] = {}
    for i in range(0, len(xids), MAX_PROBE):
        chunk = xids[i:i + MAX_PROBE]
        for f in client.files.retrieve_multiple(external_ids=chunk, ignore_unknown_ids=True):
            if f.external_id is not None:
                found[f.external_id] = f
    return found


def highest_marker(client: CogniteClient, model_name: str, env: str) -> int:
    """The highest block marker k (markers 0..k all exist), -1 when the model has no version in env."""
    candidates = list(range(DENSE_MARKERS)) + [DENSE_MARKERS << i for i in range(40)]
    present: set[int] = {-1}
    absent: set[int] = set()
    while True:
        found = probe(client, [marker_xid(model_name, env, k) for k in candidates])
        for k in candidates:
            (present if marker_xid(model_name, env, k) in found else absent).add(k)
        lo = max(present)
        hi = min((k for k in absent if k > lo), default=None)
        if hi is None:  # every probe so far exists: double beyond the highest
            candidates = [lo + (1 << i) for i in range(40)]
        elif hi - lo <= 1:
            return lo
        elif hi - lo - 1 <= MAX_PROBE:
            candidates = list(range(lo + 1, hi))
        else:
            step = (hi - lo - 1) / MAX_PROBE
            candidates = sorted({lo + 1 + int(i * step) for i in range(MAX_PROBE)})


def scan_down(client: CogniteClient, model_name: str, env: str, accept: Callable[[FileMetadata], bool],
              top_block: int) -> FileMetadata | None:
    """The highest version accepted by `accept`, probing block by block downwards from top_block."""
    block, span = top_block, 1
    while block >= 0:
        first = max(1, (block - span + 1) * BLOCK)
        last = (block + 1) * BLOCK - 1
        xids = [version_xid(model_name, env, v) for v in range(last, first - 1, -1)]
        found = probe(client, xids)
        for xid in xids:
            if xid in found and accept(found[xid]):
                return found[xid]
        block -= span
        span = min(span * 2, MAX_PROBE // BLOCK)  # empty blocks below (tombstones, crashes): widen the window
    return None


def latest_file(client: CogniteClient, model_name: str, env: str) -> FileMetadata | None:
    """The file of the latest usable version, None when there is none."""
    top = highest_marker(client, model_name, env)
    return scan_down(client, model_name, env, is_ready, top) if top >= 0 else None


def ensure_data_set(client: CogniteClient, external_id: str) -> int:
    """The id of the data set holding the model's files, created on first use (data sets cannot be deleted: no
    cleanup)."""
    from cognite.client.data_classes import DataSetWrite

    found = client.data_sets.retrieve(external_id=external_id)
    if found is None:
        try:
            found = client.data_sets.create(
                DataSetWrite(external_id=external_id, name=external_id, description="akerbp.mlops model artifacts")
            )
        except CogniteDuplicatedError:  # created concurrently
            found = client.data_sets.retrieve(external_id=external_id)
    if found is None:  # created concurrently, then gone: data sets cannot be deleted, so CDF misbehaved
        raise MlopsError(f"data set {external_id} was reported created but cannot be retrieved: retry")
    return found.id


def ensure_markers(client: CogniteClient, model_name: str, env: str, first: int, last: int, data_set_id: int | None) -> None:
    """Create markers first..last in ascending order (so markers stay dense even if this process dies)."""
    for block in range(first, last + 1):
        try:
            client.files.upload_bytes(
                b"",
                name=f"{model_name}-{env}-block-{block}",
                external_id=marker_xid(model_name, env, block),
                directory=INDEX_DIRECTORY,
                metadata={"model_name": model_name, "env": env, "block": str(block),
                          "covers": f"versions {block * BLOCK} to {block * BLOCK + BLOCK - 1}"},
                data_set_id=data_set_id,
                overwrite=False,
            )
        except CogniteDuplicatedError:
            pass
