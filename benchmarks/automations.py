"""Automations benchmark (issue 11): what `mlops automations register` costs when nothing changed, and what one
scheduled run costs beyond the model's own train() and the deploy's function builds, task by task.

    python benchmarks/automations.py [--repeat 5] [--runs 3] [--json]

In a temporary copy of the template repo with its own local CDF (served in this process, isolation
shared-no-install, announced so the CLI runs find it, as tests/support.Repo does):
  register   10 automations registered once, then --repeat alternating runs of `mlops --help` (the CLI's start) and
             `mlops automations register --env test` (all 10 unchanged: no write); the median difference is what
             register costs beyond starting the CLI. Goal: <= 1 s.
  run        one more automation (hourly, no condition: every run deploys to test), fired by
             `mlops local-cdf tick --now T` at its next --runs + 1 due times; the first run creates the prediction
             service, the others replace it (the weekly steady state; their median is reported). Per task, from the
             execution (retrieve_detailed: each task's start and end) and its function call: the task's wall time,
             the call's share, the step's own phases (the steps' outputs carry "phases"). Excluded as not the
             framework's: train() itself (timed alone here, warm, on the same data) and the deploy's function builds
             (its "standby build" and "replace" phases: CDF builds functions, for minutes). Goal: <= 3 s in all.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import Repo, copy_template  # noqa: E402  (the tests' helpers: a template repo with a served local CDF)

DATA = {"n_samples": 300, "seed": 1}
TASKS = ("train", "gate", "deploy", "notify")
BUILDS = ("standby build", "replace")  # the deploy's phases that wait for CDF to build a function

HEADER = """from akerbp.mlops.automations import (Automation, BuildMetric, DeploymentSpecifications, ScheduledTrigger,
    ThresholdDirection, TrainDeploy, TrainingSpecifications)

automations = [
"""
IDLE = """    Automation(name="idle_{i}", model="well_density", trigger=ScheduledTrigger(cron="{cron}"),
               action=TrainDeploy(training=TrainingSpecifications(data={data}),
                                  deployment_condition=[BuildMetric(metric_name="r2",
                                                                    direction=ThresholdDirection.ABOVE,
                                                                    threshold=0.5)],
                                  deployment=DeploymentSpecifications(environments=["test"]))),
"""
SCHEDULED = """    Automation(name="hourly_refit", model="well_density", trigger=ScheduledTrigger(interval="Hourly"),
               action=TrainDeploy(training=TrainingSpecifications(data={data}),
                                  deployment=DeploymentSpecifications(environments=["test"]))),
"""


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def write(repo: Repo, scheduled: bool) -> None:
    """10 automations due once a year (yesterday's date: no tick here reaches them), and the hourly one."""
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    body = "".join(IDLE.format(i=i, cron=f"{i} 6 {yesterday.day} {yesterday.month} *", data=DATA) for i in range(10))
    (repo.root / "mlops_automations.py").write_text(HEADER + body + (SCHEDULED.format(data=DATA) if scheduled
                                                                     else "") + "]\n")


def timed(repo: Repo, *args: str, **env: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = repo.run("mlops", *args, **env)
    seconds = time.perf_counter() - started
    if done.code != 0:
        sys.exit(f"mlops {' '.join(args)} failed ({done.code}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def bench_register(repo: Repo, repeat: int) -> dict[str, Any]:
    write(repo, scheduled=False)
    first, out = timed(repo, "automations", "register", "--env", "test")
    assert "10 created" in out, out
    helps, registers, imports = [], [], []
    for _ in range(repeat):
        helps.append(timed(repo, "--help")[0])
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cognite.client"], check=True)
        imports.append(time.perf_counter() - started)
        seconds, out = timed(repo, "automations", "register", "--env", "test")
        assert "10 unchanged" in out and "Nothing to change" in out, out
        registers.append(seconds)
    return {"first_register_s": round(first, 3), "help_s": median(helps), "unchanged_register_s": median(registers),
            "sdk_import_s": median(imports),
            "beyond_cli_start_s": round(median(registers) - median(helps), 3)}


def train_alone(root: Path, repeat: int = 5) -> float:
    """The model's own train() on the automation's data, warm (numpy imported, one call before)."""
    sys.path.insert(0, str(root))
    from model_code import model  # the template's, as the automation function runs it

    times = []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(repeat + 1):
            started = time.perf_counter()
            model.train(dict(DATA), str(Path(folder) / str(i)), {})
            times.append(time.perf_counter() - started)
    return median(times[1:])


def one_run(repo: Repo, due: datetime, train_s: float) -> dict[str, Any]:
    """Tick at `due` + 1 min (the CLI), then the execution's tasks: wall, call, phases, framework overhead."""
    tick_s, out = timed(repo, "local-cdf", "tick", "--now", (due + timedelta(minutes=1)).isoformat(), "--json",
                        MLOPS_LOCAL_CDF_ISOLATION="shared-no-install")
    [fired] = [r for r in json.loads(out) if r.get("externalId") == "mlops-automation-test-hourly_refit"]
    client = repo.client
    ex = client.workflows.executions.retrieve_detailed(fired["workflowExecutionId"])
    if ex is None or ex.status != "completed":
        sys.exit(f"the run ended {ex.status if ex else 'unknown'}: {ex.reason_for_incompletion if ex else ''}")
    tasks: dict[str, Any] = {}
    for task in ex.executed_tasks:
        response = (task.output.dump().get("response") if task.output is not None else None) or {}
        call = client.functions.calls.retrieve(call_id=task.output.call_id,
                                               function_external_id="well_density-automation-test")
        phases = response.get("phases") or {}
        wall = ((task.end_time or 0) - (task.start_time or 0)) / 1000
        excluded = train_s if task.external_id == "train" else 0.0
        if task.external_id == "deploy":
            excluded = sum(v for k, v in phases.items() if k.split(": ")[-1] in BUILDS)
        call_s = ((call.end_time or 0) - (call.start_time or 0)) / 1000
        step_s = float(phases.get(task.external_id) or 0.0)  # the step's own time inside the handler
        tasks[task.external_id] = {
            "wall_s": round(wall, 3), "call_s": round(call_s, 3), "step_s": round(step_s, 3),
            "call_start_s": round(call_s - step_s, 3), "excluded_s": round(excluded, 3),
            "overhead_s": round(wall - excluded, 3), "phases": phases}
    total = ((ex.end_time or 0) - (ex.start_time or 0)) / 1000
    return {"tick_s": round(tick_s, 3), "execution_s": round(total, 3), "tasks": tasks,
            "overhead_s": round(total - sum(t["excluded_s"] for t in tasks.values()), 3),
            "deployed": (tasks["deploy"]["phases"] or {}).get("deploy test") is not None}


def bench_run(repo: Repo, runs: int) -> dict[str, Any]:
    write(repo, scheduled=True)
    _, out = timed(repo, "automations", "register", "--env", "test")
    assert "1 created" in out and "10 unchanged" in out, out
    train_s = train_alone(repo.root)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    results = [one_run(repo, hour + timedelta(hours=i + 1), train_s) for i in range(runs + 1)]
    steady = results[1:]
    per_task = {name: {key: median([r["tasks"][name][key] for r in steady]) for key in
                       ("wall_s", "call_s", "step_s", "call_start_s", "excluded_s", "overhead_s")}
                for name in TASKS}
    return {"train_alone_s": train_s, "first": results[0], "runs": steady, "median_per_task": per_task,
            "median_overhead_s": median([r["overhead_s"] for r in steady]),
            "median_execution_s": median([r["execution_s"] for r in steady]),
            "median_tick_s": median([r["tick_s"] for r in steady])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="alternating --help / register runs")
    parser.add_argument("--runs", type=int, default=3, help="scheduled runs after the first (which creates)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repo(copy_template(Path(tmp) / "repo"), isolation="shared-no-install")
        try:
            register = bench_register(repo, args.repeat)
            run = bench_run(repo, args.runs)
        finally:
            repo.close()
    if args.json:
        print(json.dumps({"register": register, "run": run}, indent=1))
        return
    print(f"register, 10 automations, median of {args.repeat} (seconds)")
    print(f"  first register (10 created, the automation function built)   {register['first_register_s']:.2f}")
    print(f"  `mlops --help` (the CLI's start)                               {register['help_s']:.2f}")
    print(f"  `mlops automations register`, all unchanged                    {register['unchanged_register_s']:.2f}")
    print(f"  beyond the CLI's start                                         {register['beyond_cli_start_s']:.2f}"
          "   goal <= 1 s")
    print(f"  (for contrast: `python -c 'import cognite.client'`, which register needs: {register['sdk_import_s']:.2f})")
    print(f"\none scheduled run (tick --now at its due time), median of {args.runs} replacing runs (seconds)")
    print(f"  train() alone, warm: {run['train_alone_s']:.3f}; the tick command: {run['median_tick_s']:.2f}; "
          f"the execution: {run['median_execution_s']:.2f}")
    print(f"  {'task':<8} {'wall':>6} {'call':>6} {'step':>6} {'call start':>11} {'excluded':>9} {'overhead':>9}")
    for name in TASKS:
        t = run["median_per_task"][name]
        print(f"  {name:<8} {t['wall_s']:>6.2f} {t['call_s']:>6.2f} {t['step_s']:>6.2f} {t['call_start_s']:>11.2f} "
              f"{t['excluded_s']:>9.2f} {t['overhead_s']:>9.2f}")
    print("  (wall: the task's start to end; call: its function call's; step: the handler's own time; call start:")
    print("   call - step, a fresh worker importing the bundle on a task's first call in the tick's process)")
    print(f"  overhead beyond train() and the function builds: {run['median_overhead_s']:.2f}   goal <= 3 s")
    print("  (the execution's wall time minus train() and the builds; between tasks: the engine's)")
    last = run["runs"][-1]["tasks"]
    for name in TASKS:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in (last[name]["phases"] or {}).items())
        print(f"  last run, {name} phases: {shown}")
    first = run["first"]
    print(f"  the first run (creates the prediction service): execution {first['execution_s']:.2f}, "
          f"overhead {first['overhead_s']:.2f}")


if __name__ == "__main__":
    main()
