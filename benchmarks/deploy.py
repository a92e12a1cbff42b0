"""How long does `mlops deploy` take, and where does the time go? (template model, fresh local CDF, real CLI)

    python benchmarks/deploy.py [--repeat 3]

Runs, in a temporary copy of the template repo with its own local CDF (embedded by each CLI run, as on a laptop
where no `mlops local-cdf serve` runs):
  fresh       the first deploy of the prediction service (nothing live: one function build)
  changed     a redeploy after a change to the model code (standby build, replacement, gap)
  unchanged   a redeploy with nothing changed (skipped after the model tests)
  rollback    `mlops rollback` to the previous deployment
and, for reference, the model's own tests alone (`python -m pytest model_code/test_model.py`). Each figure is the
median of --repeat runs; phases come from the deploy's --json output, wall times include starting the CLI.
"Framework overhead" = deploy wall time - the model tests' own wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLEARED = ("CI", "BITBUCKET_BUILD_NUMBER", "MLOPS_LOCAL_CDF", "ENV", "LOCAL_DEPLOYMENT")
PHASES = ("artifacts", "build + hash", "change detection", "zip", "model tests (run)", "model tests (wait)",
          "service test (wait)", "data set", "upload", "standby build", "replace", "smoke", "cleanup")


def make_repo(root: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("model_code", "model_artifact"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    for name in ("deploy_prediction_service.sh", "mlops_settings.py"):
        shutil.copy(REPO / name, root / name)
    return root


def environment(cdf_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith(("COGNITE_", "MLOPS_SECRET_"))}
    env.update(MLOPS_LOCAL_CDF_DIR=str(cdf_dir), PYTHONDONTWRITEBYTECODE="1")
    return env


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, dict | None]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    try:
        return seconds, json.loads(done.stdout)
    except ValueError:
        return seconds, None


def one_round(workdir: Path) -> dict:
    repo = make_repo(workdir / "repo")
    env = environment(workdir / "cdf")
    deploy = ["bash", "deploy_prediction_service.sh", "--json"]
    out = {}
    out["model tests alone"], _ = timed([sys.executable, "-m", "pytest", "model_code/test_model.py", "-q",
                                         "-p", "no:cacheprovider"], repo, env)
    for label in ("fresh", "changed", "unchanged"):
        if label == "changed":
            with open(repo / "model_code" / "model.py", "a") as f:
                f.write("\n# changed\n")
        wall, report = timed(deploy, repo, env)
        result = report["results"][0]
        assert result["result"] == ("unchanged" if label == "unchanged" else "deployed"), result
        out[label] = {"wall": wall, "phases": result["phases"], "gap": result["gap_seconds"],
                      "seconds": result["seconds"]}
    wall, report = timed(["mlops", "rollback", "well_density", "--json"], repo, env)
    out["rollback"] = {"wall": wall, "seconds": report["seconds"], "gap": report["gap_seconds"]}
    return out


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="mlops-bench-deploy-") as tmp:
            rounds.append(one_round(Path(tmp)))
        print(f"round {i + 1}/{args.repeat} done", file=sys.stderr)

    tests_alone = median(r["model tests alone"] for r in rounds)
    print(f"akerbp.mlops deploy benchmark: template model, local CDF, {os.cpu_count()} CPUs, median of {args.repeat}")
    print()
    print(f"{'phase (s)':<22}{'fresh':>9}{'changed':>9}{'unchanged':>11}")
    for phase in PHASES:
        cells = [median(r[label]["phases"].get(phase) for r in rounds) for label in ("fresh", "changed", "unchanged")]
        print(f"{phase:<22}" + "".join(f"{c:>{w}.3f}" if c == c else f"{'-':>{w}}" for c, w in zip(cells, (9, 9, 11))))
    for key, name in (("seconds", "in-process total"), ("wall", "wall (CLI start incl.)")):
        cells = [median(r[label][key] for r in rounds) for label in ("fresh", "changed", "unchanged")]
        print(f"{name:<22}" + "".join(f"{c:>{w}.3f}" for c, w in zip(cells, (9, 9, 11))))
    print()
    print(f"model tests alone (wall)                 {tests_alone:.3f} s")
    for label in ("fresh", "changed", "unchanged"):
        overhead = median(r[label]["wall"] for r in rounds) - tests_alone
        print(f"framework overhead, {label + ' deploy':<20} {overhead:.3f} s  (wall - model tests alone)")
    print(f"gap during replacement (changed deploy)  {median(r['changed']['gap'] for r in rounds):.3f} s")
    print(f"rollback to previous: in-process         {median(r['rollback']['seconds'] for r in rounds):.3f} s")
    print(f"rollback to previous: wall               {median(r['rollback']['wall'] for r in rounds):.3f} s")
    print(f"gap during rollback                      {median(r['rollback']['gap'] for r in rounds):.3f} s")


if __name__ == "__main__":
    main()
