"""Do models deploy concurrently, and does an unchanged redeploy cost about as much as `mlops status`?

    python benchmarks/deploy_concurrency.py [--models 5] [--build-delay 10] [--repeat 1] [--skip-sequential]

In a temporary 5-model repo (common code, one artifact folder each) with its own local CDF (embedded by each CLI run,
every function build taking at least --build-delay seconds, as CDF's builds take minutes):
  sequential   a fresh deploy of every model's prediction service with --jobs 1 (one build per model)
  concurrent   the same into another fresh local CDF with --jobs = the number of models
  unchanged    a redeploy of the concurrent one with nothing changed (no build; the local hint .mlops/verified/
               says the last deploy verified these inputs, so neither the model tests nor the ServiceTest start)
  status       `mlops status` against the same local CDF
Wall times include starting the CLI; each is the median of --repeat runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLEARED = ("CI", "BITBUCKET_BUILD_NUMBER", "MLOPS_LOCAL_CDF", "ENV", "LOCAL_DEPLOYMENT")
MODEL = '''
import json
from pathlib import Path

from models.common_code.scale import scale


class ModelException(Exception):
    pass


def initialization(folder, secrets):
    return json.loads((Path(folder) / "factor.json").read_text())["factor"]


def predict(data, factor, secrets):
    return [scale(x, factor) for x in data["x"]]


def train(data, folder, secrets):
    Path(folder, "factor.json").write_text(json.dumps({"factor": 2}))
    return {"factor": 2}
'''
TESTS = '''
from models.{name} import model


class ServiceTest:
    prediction_input = {{"x": [1, 2, 3]}}

    @staticmethod
    def prediction_check(output):
        return output["status"] == "ok" and output["prediction"] == [2, 4, 6]


def test_predict_scales():
    assert model.predict({{"x": [1]}}, 2, {{}}) == [2]
'''
SETTING = '''    ModelSettings(model_name="{name}", model_file="models/{name}/model.py",
                  req_file="models/{name}/requirements.model", test_file="models/{name}/test_model.py",
                  artifact_folder="artifacts/{name}"),
'''


def make_repo(root: Path, count: int) -> Path:
    names = [f"model{i + 1}" for i in range(count)]
    files = {"models/__init__.py": "", "models/common_code/__init__.py": "",
             "models/common_code/scale.py": "def scale(x, factor):\n    return x * factor\n",
             "mlops_settings.py": "from akerbp.mlops import ModelSettings\n\nmodels = [\n"
                                  + "".join(SETTING.format(name=n) for n in names) + "]\n"}
    for name in names:
        files.update({f"models/{name}/__init__.py": "", f"models/{name}/model.py": MODEL,
                      f"models/{name}/test_model.py": TESTS.format(name=name),
                      f"models/{name}/requirements.model": "# no requirements\n",
                      f"artifacts/{name}/factor.json": '{"factor": 2}'})
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text))
    shutil.copy(REPO / "deploy_prediction_service.sh", root / "deploy_prediction_service.sh")
    return root


def environment(cdf_dir: Path, build_delay: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith(("COGNITE_", "MLOPS_SECRET_"))}
    env.update(MLOPS_LOCAL_CDF_DIR=str(cdf_dir), MLOPS_LOCAL_CDF_BUILD_DELAY_S=str(build_delay),
               PYTHONDONTWRITEBYTECODE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return env


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def one_round(workdir: Path, count: int, build_delay: float, sequential: bool = True) -> dict[str, float]:
    repo = make_repo(workdir / "repo", count)
    mlops = [sys.executable, "-m", "akerbp.mlops.cli"]
    out = {}
    if sequential:
        out["sequential"] = timed([*mlops, "deploy", "prediction", "--jobs", "1"], repo,
                                  environment(workdir / "cdf-sequential", build_delay))
    env = environment(workdir / "cdf-concurrent", build_delay)
    out["concurrent"] = timed([*mlops, "deploy", "prediction", "--jobs", str(count)], repo, env)
    out["unchanged"] = timed([*mlops, "deploy", "prediction", "--jobs", str(count)], repo, env)
    out["status"] = timed([*mlops, "status"], repo, env)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--build-delay", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-sequential", action="store_true", help="skip the --jobs 1 deploy (the slowest part)")
    args = parser.parse_args()
    rounds = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="mlops-bench-concurrency-") as tmp:
            rounds.append(one_round(Path(tmp), args.models, args.build_delay, not args.skip_sequential))
        print(f"round {i + 1}/{args.repeat} done", file=sys.stderr)
    m = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"akerbp.mlops concurrent deploy benchmark: {args.models} models, build delay {args.build_delay:g} s, "
          f"{os.cpu_count()} CPUs, median of {args.repeat}")
    if "sequential" in m:
        print(f"fresh deploy, --jobs 1 (sequential)        {m['sequential']:7.2f} s wall")
    print(f"fresh deploy, --jobs {args.models:<2} (concurrent)       {m['concurrent']:7.2f} s wall")
    if "sequential" in m:
        print(f"sequential / concurrent                    {m['sequential'] / m['concurrent']:7.2f} x")
    print(f"unchanged redeploy, --jobs {args.models:<2}              {m['unchanged']:7.2f} s wall")
    print(f"mlops status                               {m['status']:7.2f} s wall")
    print(f"unchanged redeploy / status                {m['unchanged'] / m['status']:7.2f} x")


if __name__ == "__main__":
    main()
