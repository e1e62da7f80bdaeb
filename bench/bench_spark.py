"""Spark batch prediction vs plain `radassist predict`, and the cost of MLflow tracking on a training run.

    .venv/bin/python bench/bench_spark.py                      # issue 13's sizes: 100,000 / 2,000 orders
    .venv/bin/python bench/bench_spark.py --n 20000 --llm-n 300 # shorter
    .venv/bin/python bench/bench_spark.py --skip-llm --skip-mlflow

Orders come from radassist.synthetic (never the dev sets). Both commands run as subprocesses on
the same file with the same engine (the shipped models, no database); peak memory is the highest
resident set of the driver (the radassist process), the Spark JVM and the sum of the Python
workers, sampled every 0.2 s. The records are compared (all keys but latency_ms). Timings are wall
clock on this machine; other work on it adds noise, so the ratio is the number to read.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RADASSIST = [sys.executable, "-m", "radassist.cli"]


def make_orders(path: Path, n: int, seed: int = 13) -> None:
    from radassist.catalog import default_catalog
    from radassist.synthetic import generate

    catalog = default_catalog()
    per_protocol = max(1, -(-n // len(catalog)))
    examples = generate(catalog, per_protocol=per_protocol, seed=seed)[:n]
    with open(path, "w", encoding="utf-8") as f:
        for i, ex in enumerate(examples):
            o = ex.order
            f.write(json.dumps({"accession": f"B{i:07d}", "ordered_exam": o.ordered_exam,
                                "clinical_notes": o.clinical_notes, "age": o.age, "sex": o.sex,
                                "priority": o.priority}) + "\n")


class PeakMemory:
    """Peak RSS (MiB) of a process tree, by role: driver, jvm, python workers (summed), total."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = {"driver": 0.0, "jvm": 0.0, "workers": 0.0, "total": 0.0}
        self.loads: list[float] = []  # 1-minute load average, sampled with the memory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
                now = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
                for p in procs:
                    try:
                        rss = p.memory_info().rss / 2**20
                        name = p.name()
                    except psutil.Error:
                        continue
                    if p.pid == self.root.pid:
                        now["driver"] += rss
                    elif "java" in name:
                        now["jvm"] += rss
                    else:
                        now["workers"] += rss
                now["total"] = sum(now.values())
                self.loads.append(os.getloadavg()[0])
                for k, v in now.items():
                    self.peak[k] = max(self.peak[k], v)
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        loads = self.loads or [os.getloadavg()[0]]
        # The machine's load while measured (other engineers' work adds to ours: ~1 = one core busy).
        self.peak["load_mean"] = sum(loads) / len(loads)
        self.peak["load_max"] = max(loads)
        return self.peak


RESULTS: Path | None = None  # --results: every measurement appended as soon as it is taken


def record(row: dict) -> None:
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **row}
    print(json.dumps(row), flush=True)
    if RESULTS is not None:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def run(cmd: list[str], env: dict) -> tuple[float, dict, str]:
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    mem = PeakMemory(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak = mem.stop()
    peak["load_before"] = load_before[0]
    peak["load_after"] = os.getloadavg()[0]
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[2:4])} failed ({proc.returncode}):\n{err[-3000:]}")
    record({"command": " ".join(cmd[3:]), "wall_s": round(wall, 1), "mem_mib": {k: round(v, 2) for k, v in peak.items()},
            "stderr_tail": [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()
                            and not ln.startswith(("predict:", "Converting"))][-3:]})
    return wall, peak, err


def records(path: Path) -> list[dict]:
    if path.is_dir():
        from radassist.scale import spark_predict as sp

        reader = getattr(sp, "read_parquet_records", None) or getattr(sp, "read_predictions")
        return reader(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def compare(engine: str, n: int, master: str, tmp: Path, env: dict) -> dict:
    orders = tmp / f"orders-{engine}-{n}.jsonl"
    make_orders(orders, n)
    db = str(tmp / "none.db")  # no database: the shipped models, as on a fresh install
    plain_out, spark_out = tmp / f"predict-{engine}.jsonl", tmp / f"spark-{engine}.jsonl"
    record({"phase": "start", "engine": engine, "n": n, "master": master})
    plain_wall, plain_mem, _ = run(RADASSIST + ["predict", "--input", str(orders), "--output", str(plain_out),
                                                "--engine", engine, "--db", db], env)
    spark_wall, spark_mem, err = run(RADASSIST + ["spark-predict", "--input", str(orders), "--output",
                                                  str(spark_out), "--engine", engine, "--master", master,
                                                  "--db", db], env)
    a, b = records(plain_out), records(spark_out)

    def strip(r):
        return {k: v for k, v in r.items() if k != "latency_ms"}

    same = sum(strip(x) == strip(y) for x, y in zip(a, b)) if len(a) == len(b) else 0
    return {"engine": engine, "n": n, "master": master, "plain_s": plain_wall, "spark_s": spark_wall,
            "ratio": spark_wall / plain_wall, "plain_rate": n / plain_wall, "spark_rate": n / spark_wall,
            "plain_mem": plain_mem, "spark_mem": spark_mem, "identical": same, "records": len(b),
            "spark_summary": [line for line in err.splitlines() if "predicted" in line][-1:]}


def mlflow_overhead(tmp: Path, repeats: int, per_protocol: int) -> dict:
    """One embedding training run (the service, default epochs) without and with the MLflow observer."""
    from radassist.catalog import default_catalog
    from radassist.engines.embedding import load_sentence_encoder
    from radassist.synthetic import generate
    from radassist.tracking.mlflow_observer import MLflowObserver
    from radassist.training.run_events import ObserverGroup
    from radassist.training.run_service import TrainingRun, TrainingRunConfig

    catalog = default_catalog()
    data = generate(catalog, per_protocol=per_protocol, seed=21)
    load_sentence_encoder()  # warm: the first load is not the run's cost
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    times: dict[str, list[float]] = {"without": [], "with": []}

    def one(label: str, i: int) -> float:
        observers = ObserverGroup([MLflowObserver(uri, catalog=catalog)] if label == "with" else [])
        cfg = TrainingRunConfig(engine="embedding", source="file", out_dir=tmp / f"models-{label}-{i}")
        run = TrainingRun(None, cfg, catalog=catalog, examples=data, observers=observers)
        run.version = f"embedding-bench-{label}-{i}"
        from radassist.training.run_events import RunInfo

        t0 = time.perf_counter()
        info = RunInfo("embedding", run.version, started_by="bench")
        observers.run_started(info, cfg.hyperparams())
        run.build_data()
        model = run.train()
        observers.run_finished(info, model.metrics, model.path, model.card)
        return time.perf_counter() - t0

    one("without", -1)  # warm-up: imports, caches
    one("with", -1)
    for i in range(repeats):
        for label in ("without", "with"):
            times[label].append(one(label, i))
    without, with_ = min(times["without"]), min(times["with"])
    return {"orders": len(data), "without_s": without, "with_s": with_,
            "overhead_pct": 100 * (with_ - without) / without, "all": times}


def mlflow_app_runs(tmp: Path, env: dict, repeats: int, engine: str = "embedding", decisions_per_protocol: int = 6,
                    extra_args: tuple[str, ...] = ()) -> dict:
    """The training run the app launches (`radassist train --from-db --run-id V`, a child process, as the
    Retraining panel starts it: decisions + replay 8 + writer corpus 20 per protocol, continuing from the
    active head, held-out comparison, gate, registry), with the site setting ``mlflow_tracking_uri`` unset
    and set (a ``sqlite:///`` store). Wall time of the whole process: MLflow's import is part of its cost."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.database import new_database
    from support.retraining import ADMIN_ACTOR, seed_decisions

    from radassist import registry
    from radassist.catalog import catalog_from_db
    from radassist.settings import load_settings, save_settings

    folder = tmp / f"app-{engine}"
    folder.mkdir()
    db = new_database(folder / "site.db")
    with db.session() as session:
        codes = [p.code for p in catalog_from_db(session)]
    seed_decisions(db, folder, per_protocol=decisions_per_protocol, codes=codes)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    times: dict[str, list[float]] = {"without": [], "with": []}
    loads: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}

    def one(label: str, i: int) -> float:
        import dataclasses

        with db.session() as session:
            settings = load_settings(session)
            save_settings(session, ADMIN_ACTOR, dataclasses.replace(
                settings, mlflow_tracking_uri=uri if label == "with" else ""))
        with db.session() as session:
            run, token = registry.register_app_run(session, ADMIN_ACTOR, engine, data={}, hyperparams={})
            version = run.version
        cmd = RADASSIST + ["train", "--engine", engine, "--from-db", "--db", str(db.path), "--run-id", version,
                           "--json-progress", "--replay", "8", "--out", str(folder / f"models-{label}-{i}"),
                           *extra_args]
        import resource

        load0 = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env={**env, registry.RUN_TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"},
                              cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU seconds of the training process: what tracking costs it, less sensitive to other work on the machine
        cpu[label].append(round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2))
        if proc.returncode != 0:
            raise SystemExit(f"train ({label}) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        if "MLflow" in proc.stderr and "failed" in proc.stderr:
            raise SystemExit(f"MLflow tracking failed in the run:\n{proc.stderr[-3000:]}")
        loads[label].append(round((load0 + os.getloadavg()[0]) / 2, 2))
        record({"mlflow_app_run": engine, "label": label, "i": i, "wall_s": round(wall, 2), "cpu_s": cpu[label][-1],
                "load": loads[label][-1]})
        return wall

    one("without", -1)  # warm-up: the file cache, the catalog embedding cache
    for i in range(repeats):
        for label in (("without", "with") if i % 2 == 0 else ("with", "without")):
            times[label].append(one(label, i))
    from mlflow.tracking import MlflowClient

    tracked = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(
        f"name = 'radassist-{engine}'")
    without, with_ = min(times["without"]), min(times["with"])
    import statistics

    med_without, med_with = statistics.median(times["without"]), statistics.median(times["with"])
    db.dispose()
    return {"mlflow_app_run": engine, "decisions": decisions_per_protocol * len(codes), "extra_args": list(extra_args),
            "without_s": without, "with_s": with_, "overhead_pct": 100 * (with_ - without) / without,
            "median_overhead_pct": 100 * (med_with - med_without) / med_without, "all": times, "loads": loads,
            "cpu_s": cpu, "cpu_overhead_pct": 100 * (min(cpu["with"]) - min(cpu["without"])) / min(cpu["without"]),
            "registered_versions": len(tracked)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="orders for the embedding engine")
    ap.add_argument("--llm-n", type=int, default=2_000, help="orders for the llm engine")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--results", type=Path, default=None,
                    help="append every measurement (JSON lines) to this file as soon as it is taken")
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--mlflow-repeats", type=int, default=2)
    ap.add_argument("--mlflow-per-protocol", type=int, default=12)
    ap.add_argument("--mlflow-app", action="store_true",
                    help="also the app's own training run (radassist train --from-db --run-id), without/with MLflow")
    ap.add_argument("--mlflow-app-llm-steps", type=int, default=0,
                    help="also a short QLoRA run the app way, stopped after this many steps (0: not run)")
    args = ap.parse_args()
    global RESULTS
    RESULTS = args.results
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_embedding:
            rows.append(compare("embedding", args.n, args.master, tmp, env))
            record(rows[-1])
        if not args.skip_llm:
            rows.append(compare("llm", args.llm_n, args.master, tmp, env))
            record(rows[-1])
        ml = None if args.skip_mlflow else mlflow_overhead(tmp, args.mlflow_repeats, args.mlflow_per_protocol)
        if ml:
            record(ml)
        apps = []
        if args.mlflow_app:
            apps.append(mlflow_app_runs(tmp, env, args.mlflow_repeats))
            record(apps[-1])
        if args.mlflow_app_llm_steps:
            apps.append(mlflow_app_runs(tmp, env, args.mlflow_repeats, engine="llm",
                                        extra_args=("--max-steps", str(args.mlflow_app_llm_steps))))
            record(apps[-1])
    print()
    print("| engine | orders | predict s | spark-predict s | ratio (target <= 1.5) | orders/s predict / spark | "
          "peak MiB predict | peak MiB spark driver / JVM / workers | identical records | load avg predict / spark |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["spark_mem"]
        print(f"| {r['engine']} | {r['n']:,} | {r['plain_s']:.1f} | {r['spark_s']:.1f} ({r['master']}) | "
              f"{r['ratio']:.2f} | {r['plain_rate']:.1f} / {r['spark_rate']:.1f} | {r['plain_mem']['total']:.0f} | "
              f"{m['driver']:.0f} / {m['jvm']:.0f} / {m['workers']:.0f} | {r['identical']:,} of {r['records']:,} | "
              f"{r['plain_mem']['load_mean']:.1f} / {m['load_mean']:.1f} |")
    if ml:
        print()
        print(f"MLflow tracking on an embedding training run ({ml['orders']:,} orders, best of "
              f"{args.mlflow_repeats}): {ml['without_s']:.1f} s without, {ml['with_s']:.1f} s with -> "
              f"{ml['overhead_pct']:+.1f}% (target < 5%)")
    for a in apps:
        print(f"MLflow tracking on the app's {a['mlflow_app_run']} training run ({a['decisions']} decisions "
              f"{' '.join(a['extra_args'])}, best of {args.mlflow_repeats}): {a['without_s']:.1f} s without, "
              f"{a['with_s']:.1f} s with -> {a['overhead_pct']:+.1f}% (median {a['median_overhead_pct']:+.1f}%; "
              f"target < 5%); CPU {a['cpu_overhead_pct']:+.1f}%; loads {a['loads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
