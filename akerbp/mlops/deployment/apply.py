"""Applying one model's plan (plan.py) in CDF, under the function's deploy lock (lock.py).

Under the lock the live function is read again and the plan made again from it (another deploy may have finished
meanwhile: then this one is usually `unchanged`). Then, for new code, three steps one after another:
  1. switch live   release.put_live: upload, standby, replace (the live function keeps answering until its
                   successor built);
  2. smoke         smoke.run: the live function called with ServiceTest's input, its answer checked;
  3. confirm       release.confirm (verified, standbys and old code files removed)
     or roll back  release.roll_back (the previous deployment put back; SmokeFailed).
Steps 2-3 run shielded from Ctrl-C/SIGTERM (interrupts.shielded), so what is live is verified when a stop takes
effect. A live function that runs this content unverified (plan action `verify`) goes through 2-3 only.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from akerbp.mlops.deployment import build, functions, interrupts, plan as plans, records, release, smoke
from akerbp.mlops.deployment.lock import DeployLock
from akerbp.mlops.deployment.result import Applied
from akerbp.mlops.utils import provenance

if TYPE_CHECKING:
    from akerbp.mlops.deployment.prepare import ModelJob, Prepared


def apply(job: ModelJob, prepared: Prepared) -> None:
    """Execute the plan of `prepared`; the outcome goes into job.result (errors propagate: SmokeFailed, ...)."""
    result, settings, say, deadline = job.result, job.settings, job.say, job.deadline
    assert prepared.built is not None and result.hash is not None and result.plan is not None
    client = job.target.client()
    t = time.monotonic()
    data_set = functions.data_set_id(client, settings.dataset)
    job.timed("data set", t)
    check = smoke.SmokeCheck(job.service, job.tester.input(job.service), job.tester, result.model_id,
                             prepared.secrets)
    by = provenance.who()
    t = time.monotonic()
    with DeployLock(client, result.function, deadline, say) as lock:
        job.timed("lock", t)
        live = functions.retrieve(client, result.function)  # again: another deploy may have finished meanwhile
        same = live is not None and live.status == "Ready" and (live.metadata or {}).get("mlops_hash") == result.hash
        plan = plans.make(client, result.function, result.hash, live,
                          verified=same and live is not None and records.is_verified(client, live),
                          artifact=result.model_id, version=result.version, force=job.force and not lock.waited,
                          retest=job.retest, keep=settings.models_to_keep)
        if plan.action != result.plan.action:
            say(f"what is live changed while this deploy waited for the lock: now {plan.action}, not "
                f"{result.plan.action}")
        result.plan = plan
        if plan.action == "unchanged":
            result.result = "unchanged"
            say(f"unchanged: another deploy put hash {result.hash[:10]} live and verified it while this one "
                "waited for it" if lock.waited else f"unchanged: {result.function} already runs {result.hash[:10]}")
            return
        lock.check()
        ctx = release.ReleaseContext(client, result.function, deadline, by, say, settings.models_to_keep)
        applied = result.applied = Applied()
        if plan.action == "verify":
            assert live is not None
            say(f"{result.function} runs hash {result.hash[:10]}, but that deployment never passed its smoke check "
                "(a deploy of it was stopped or killed): checking it now, rolling back if it fails")
            out = release.of_live(ctx, live)
        else:  # step 1: switch live
            zip_bytes = prepared.zip_bytes if prepared.zip_bytes is not None else build.zip_folder(prepared.built.path)
            mlops_md = records.mlops_metadata(
                model=settings.model_name, service=job.service, env=job.env, version=result.version,
                model_id=result.model_id, content_hash=result.hash,
                commit=job.inside.commit if job.inside is not None else provenance.git_commit(settings.root,
                                                                                        mark_dirty=True),
                deployed_at=records.now_iso(), by=by)
            new = release.NewCode(result.hash, zip_bytes, prepared.built.options,
                                  prepared.secrets, mlops_md, data_set)
            out = release.put_live(ctx, new)
            applied.upload, applied.create = out.code_file_xid, list(out.switch.created)
            applied.remove = [result.function] if out.switch.replaced else []
            applied.schedules_kept = list(out.switch.schedules_kept)
            result.gap_seconds = out.switch.gap
        result.code_file = out.code_file
        with interrupts.shielded():  # the code is live: prove it or roll it back before stopping
            t = time.monotonic()
            verdict = smoke.run(client, result.function, check, deadline, say)  # step 2: smoke
            out.phases["smoke"] = time.monotonic() - t
            applied.smoke = "passed" if verdict.passed else "failed"
            result.phases.update(out.phases)
            if not verdict.passed:
                release.roll_back(ctx, out, verdict.detail)  # step 3: roll back (raises SmokeFailed) ...
            release.confirm(ctx, out)  # ... or confirm
        result.phases.update(out.phases)
        applied.remove += [x for x in out.removed.functions if x not in applied.remove]
        applied.delete_code_files = list(out.removed.code_file_xids)
    result.result = "verified" if plan.action == "verify" else "deployed"
    if out.switch.gap is not None:
        say(f"live again after a gap of {out.switch.gap:.2f} s (its standby {out.switch.standby} answered "
            "meanwhile, and is removed now)")
