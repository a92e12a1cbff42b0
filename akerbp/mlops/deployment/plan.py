"""The plan a `--dry-run` prints (what a deploy would create and remove, read-only), and the deploy's summary table."""
from __future__ import annotations

from akerbp.mlops.utils.logger import mask


def plan(target, result, live, unchanged: bool, keep_deployments: int, verify: bool = False) -> dict:
    """What a deploy would create and remove (read-only)."""
    from akerbp.mlops.deployment import functions, release

    xid, content_hash = result.function, result.hash
    plan = {"artifact": result.model_id, "hash": content_hash, "live_hash": (live.metadata or {}).get("mlops_hash")
            if live is not None else None, "changed": not unchanged and not verify, "verify": verify, "create": [],
            "remove": [], "upload": None, "delete_code_files": []}
    if unchanged or verify:
        return plan
    standby = functions.standby_xid(xid, content_hash)
    if live is not None and live.status == "Ready":
        plan["create"].append(standby)
    plan["create"].append(xid)
    if live is not None:
        plan["remove"].append(f"{xid} (replaced)")
    if live is not None and live.status == "Ready":
        plan["remove"].append(f"{standby} (once {xid} is replaced and verified)")
    plan["upload"] = functions.code_xid(xid, content_hash)
    if target.readable() and live is not None:
        client = target.client()
        plan["remove"] += [f.external_id for f in functions.standbys(client, xid) if f.external_id != standby]
        kept = release.history(client, xid)[: keep_deployments - 1]
        known = {d.file_id for d in kept}
        plan["delete_code_files"] = [f.external_id for f in functions.code_files(client, xid)
                                     if f.id not in known and f.external_id != plan["upload"]]
    return plan


def summary_table(results: list) -> str:
    rows = [["model", "service", "env", "version", "result", "seconds"]]
    for r in results:
        # a registry version's number, or the last part of another artifact's id (dev: local-{digest})
        version = str(r.version) if r.version is not None else (r.model_id or "-").rsplit("/", 1)[-1]
        rows.append([r.model, r.service, r.env, version, r.result,
                     f"{r.seconds:.1f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for r in results:
        if not r.ok:
            first, *more = r.message.splitlines() or [""]
            lines.append(f"{r.model} ({r.service}, {r.env}): {first}" + (" (details above)" if more else ""))
    return mask("\n".join(lines))


def plan_text(results: list) -> str:
    lines = ["Plan (dry run: nothing in CDF was changed):"]
    for r in results:
        if r.plan is None:
            lines.append(f"  {r.function}: not deployable: {r.message.splitlines()[0] if r.message else r.result}")
            continue
        p = r.plan
        what = f"artifact {p['artifact']}" if p["artifact"] else "no artifact (training)"
        if p.get("verify"):
            lines.append(f"  {r.function}: {what}; hash {p['hash'][:10]} is live but was never verified (a deploy "
                         "of it was stopped): smoke-check it, roll back if it fails")
            continue
        if not p["changed"]:
            lines.append(f"  {r.function}: {what}; unchanged (hash {p['hash'][:10]} is live): nothing to do")
            continue
        was = f", live has {p['live_hash'][:10]}" if p["live_hash"] else ", nothing live"
        lines.append(f"  {r.function}: {what}; changed (hash {p['hash'][:10]}{was})")
        lines.append(f"    upload code file {p['upload']}")
        lines.append(f"    create: {', '.join(p['create'])}")
        if p["remove"]:
            lines.append(f"    remove: {', '.join(p['remove'])}")
        if p["delete_code_files"]:
            lines.append(f"    delete code files: {', '.join(p['delete_code_files'])}")
    return mask("\n".join(lines))
