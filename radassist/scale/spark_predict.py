"""Batch prediction on Spark: the records of `radassist predict`, for millions of orders.

    from radassist.scale.spark_predict import spark_predict
    stats = spark_predict("orders.jsonl", "predictions.parquet", master="local[2]", engine="embedding")
    stats = spark_predict(in_path, out_path, spark=spark)      # Databricks / spark-submit: their session

The same function runs unchanged on a laptop (``local[2]``), a standalone cluster (``spark://…``)
or Databricks (docs/scale.md):

- The driver resolves *which* model runs (`resolve_spec`: `radassist.engine_factory`'s rules, the
  registry's ACTIVE version or a named one, the site's catalog and settings) into a small picklable
  `EngineSpec`; workers never open the site database, they only need the model folders.
- Orders (JSONL lines, or Parquet rows turned into the same JSON on the JVM) are numbered in input
  order and cut into the same 64-order batches as `radassist predict` (a batch decides the padding of
  the sentence encoder, so the same batches give the same numbers); batches are range-partitioned
  whole, so no batch straddles two partitions. Hence the output equals `radassist predict`'s,
  whatever the partitioning (only ``latency_ms`` differs).
- ``mapInPandas`` runs `predict_frames` in each Python worker: the engine is built once per worker
  process (module-level cache keyed by engine, version, folders, catalog and settings; Spark reuses its
  Python workers across tasks and partitions) with ``torch.set_num_threads(spark.task.cpus)`` so that
  concurrent tasks do not oversubscribe the cores.
- A bad row becomes an error record (``{"accession": …, "error": "line N: …"}``, the words of
  `radassist predict`); an engine that fails on a batch gives each order of it an error record
  (``engine error: <type>``). Only a model that cannot load fails the job: that is not a bad row.
- Output: ``*.parquet`` (a Parquet folder, typed nested columns, ``row`` = input position) or one JSONL
  file in input order (written by the driver, streamed partition by partition). Both owner-only.

pyspark is imported inside the functions: the rest of RadAssist works without the extra.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from radassist.domain import Protocol
from radassist.settings import SiteSettings

log = logging.getLogger(__name__)

BATCH = 64  # orders per engine call: the batches of `radassist predict` (radassist.commands.predict.BATCH)
INSTALL_HINT = "Spark batch prediction needs the optional extra: pip install 'radassist[spark]'"

# Parquet output: the design's prediction record as typed columns (absent keys are null).
SUGGESTION_TYPE = "struct<code:string,name:string,score:double,conflicts:array<string>,why:array<string>>"
FLAG_TYPE = "struct<type:string,evidence:string,severity:string,status:string,kind:string,handled:string,note:string>"
RECORD_DDL = (f"accession string, suggestions array<{SUGGESTION_TYPE}>, flags array<{FLAG_TYPE}>, "
              "model string, latency_ms double, review boolean, review_reason string, error string")
WORKER_SCHEMA = "row long, record string, failed boolean"


class SparkUnavailable(RuntimeError):
    """pyspark (or Java) is not installed: install radassist[spark]."""


class SparkPredictError(RuntimeError):
    """The job cannot run (unreadable input, a model that cannot load). Messages carry no note text."""


def require_pyspark():
    try:
        import pyspark
    except ImportError as exc:
        raise SparkUnavailable(INSTALL_HINT) from exc
    return pyspark


# --- what the workers run ------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to build the engine, resolved on the driver (small, picklable)."""

    name: str                          # "embedding" | "llm"
    catalog: tuple[Protocol, ...]
    settings: SiteSettings = field(default_factory=SiteSettings)
    model_path: str | None = None      # the engine's model folder (None: the shipped default)
    shortlist_path: str | None = None  # the LLM's shortlisting embedding head (None: shipped)
    torch_threads: int = 1             # cores per task (spark.task.cpus)
    version: str = "shipped"           # registry version name
    top_k: int = 3
    knowledge_dir: str | None = None   # the site's safety policy folder (RADASSIST_KNOWLEDGE_DIR)

    @property
    def key(self) -> str:
        """Same key = same engine: engine, version, folders, catalog and settings."""
        blob = json.dumps([self.name, self.version, self.model_path, self.shortlist_path,
                           [asdict(p) for p in self.catalog], asdict(self.settings), self.knowledge_dir],
                          sort_keys=True, default=str)
        return f"{self.name}/{self.version}/{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


_ENGINES: dict[str, Any] = {}   # per Python worker process: EngineSpec.key -> loaded engine
_BUILDS = 0                      # engines this process has built (tests, benches)


def worker_engine(spec: EngineSpec, on_load=None):
    """The engine for ``spec``, built once per process and reused by every later partition."""
    global _BUILDS
    engine = _ENGINES.get(spec.key)
    if engine is not None:
        return engine
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if spec.knowledge_dir:
        os.environ["RADASSIST_KNOWLEDGE_DIR"] = spec.knowledge_dir
    import torch

    torch.set_num_threads(max(1, spec.torch_threads))
    try:
        torch.set_num_interop_threads(max(1, spec.torch_threads))
    except RuntimeError:  # only settable before the first parallel work of the process
        pass
    from radassist import engine_factory

    try:
        engine = engine_factory.build_engine(spec.name, list(spec.catalog), spec.settings,
                                             spec.model_path, spec.shortlist_path)
    except Exception as exc:  # a model that cannot load fails the job, with a clear message
        raise SparkPredictError(f"{spec.name} engine ({spec.version}) could not load in a Spark worker: "
                                f"{type(exc).__name__}: {exc}") from exc
    _ENGINES.clear()  # one model per worker: a new spec replaces the old one
    _ENGINES[spec.key] = engine
    _BUILDS += 1
    if on_load is not None:
        on_load()
    return engine


def parse_order_line(text: str, number: int, unit: str = "line"):
    """(accession or None, Order or None, error or None), worded as `radassist predict`."""
    from radassist.ingest import OrderFormatError, iter_jsonl_records, order_from_record

    found = list(iter_jsonl_records(text.encode("utf-8", errors="surrogatepass")))
    if not found:
        return None, None, f"{unit} {number}: empty"
    _, record, error = found[0]
    if len(found) > 1:  # a line separator inside a Parquet string value
        record, error = None, "more than one line"
    accession = record.get("accession") if isinstance(record, dict) else None
    accession = accession if isinstance(accession, str) else None
    if error is None and isinstance(record, dict):
        try:
            return accession, order_from_record(record), None
        except OrderFormatError as exc:
            error = str(exc)
    return accession, None, f"{unit} {number}: {error or 'not a JSON object'}"


def predict_rows(engine, rows: Sequence[tuple[int, int, str]], top_k: int = 3, unit: str = "line"
                 ) -> list[tuple[int, str, bool]]:
    """(row, record JSON, failed) for ONE batch of (row, line number, text), in order; never raises."""
    parsed = []
    for row, number, text in rows:
        try:
            parsed.append((row, *parse_order_line(text, number, unit)))
        except Exception as exc:  # noqa: BLE001 - never a failed job for one row
            parsed.append((row, None, None, f"{unit} {number}: {type(exc).__name__}"))
    orders = [order for _, _, order, _ in parsed if order is not None]
    try:
        predictions = iter(engine.predict_batch(orders, top_k=top_k)) if orders else iter(())
        batch_error = None
    except Exception as exc:  # noqa: BLE001 - the job goes on; the message carries no note text
        predictions, batch_error = iter(()), f"engine error: {type(exc).__name__}"
    out = []
    for row, accession, order, error in parsed:
        if order is not None and batch_error is None:
            record, failed = next(predictions).to_json(), False
        else:
            record, failed = {"accession": accession, "error": error or batch_error}, True
        out.append((row, json.dumps(record, ensure_ascii=False), failed))
    return out


def predict_frames(spec: EngineSpec, unit: str = "line", on_load=None):
    """The ``mapInPandas`` function: frames (row, line, text) sorted by row, whole batches per partition ->
    frames (row, record, failed). A batch cut by an Arrow batch boundary is carried over to the next."""

    def run(frames: Iterable[Any]) -> Iterator[Any]:
        import pandas as pd

        engine = None
        pending: list[tuple[int, int, str]] = []

        def flush(rows):
            nonlocal engine
            if engine is None:
                engine = worker_engine(spec, on_load)
            return pd.DataFrame(predict_rows(engine, rows, spec.top_k, unit), columns=["row", "record", "failed"])

        for frame in frames:
            out = []
            for row, line, text in zip(frame["row"].tolist(), frame["line"].tolist(), frame["text"].tolist()):
                if pending and row // BATCH != pending[0][0] // BATCH:
                    out.append(flush(pending))
                    pending = []
                pending.append((int(row), int(line), "" if text is None else text))
            if out:
                yield pd.concat(out, ignore_index=True)
        if pending:
            yield flush(pending)

    return run


# --- the driver ------------------------------------------------------------------------------------
@dataclass
class SparkPredictStats:
    rows: int = 0              # orders read (non-blank lines / Parquet rows)
    errors: int = 0            # error records among them
    seconds: float = 0.0
    model: str = ""            # engine/version
    partitions: int = 0
    model_loads: int = 0       # engines built in workers (one per worker process)
    worker_processes: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.rows - self.errors} predicted, {self.errors} errors in {self.seconds:.1f} s; "
                f"{self.partitions} partitions, model loaded {self.model_loads} time(s) in "
                f"{self.worker_processes} worker process(es)")


def _set_param():
    from pyspark.accumulators import AccumulatorParam

    class SetParam(AccumulatorParam):
        def zero(self, value):
            return set()

        def addInPlace(self, a, b):
            a |= b
            return a

    return SetParam()


def is_parquet(path: str | Path) -> bool:
    p = Path(str(path).rstrip("/"))
    return p.suffix.lower() in (".parquet", ".pq") or (p.is_dir() and any(p.glob("*.parquet")))


def get_session(master: str | None = None, app_name: str = "radassist-spark-predict", conf=None):
    """The active session (Databricks, spark-submit, a test's), else a new one on ``master`` (local[*]).

    Python workers run this interpreter (PYSPARK_PYTHON), so that they find radassist, torch and pandas.
    A local session binds to 127.0.0.1 only."""
    require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = master or ("" if os.environ.get("DATABRICKS_RUNTIME_VERSION") else "local[*]")
    builder = SparkSession.builder.appName(app_name)
    settings = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                "spark.python.worker.reuse": "true", "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.sql.execution.arrow.maxRecordsPerBatch": "2048", "spark.sql.shuffle.partitions": "8"}
    if master:
        builder = builder.master(master)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                         "spark.driver.memory": "2g"})
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _is_blank(text: str | None) -> bool:
    # bytes.strip() semantics (ASCII whitespace), as `radassist predict` reads its lines.
    return text is None or not text.strip(" \t\n\r\x0b\x0c")


def _count(it) -> list[int]:
    n_lines = n_rows = 0
    for text in it:
        n_lines += 1
        if not _is_blank(text):
            n_rows += 1
    return [n_lines, n_rows]


def _numbered(lines_rdd):
    """RDD of texts in input order -> (RDD of (row, (line, text)) for the non-blank ones, their count).

    ``line`` counts every input line from 1 (error messages), ``row`` only the non-blank ones from 0
    (the input position in the output, and the batches)."""
    counts = lines_rdd.mapPartitions(lambda it: [_count(it)]).collect()
    line_offsets, row_offsets, lines, rows = [], [], 0, 0
    for n_lines, n_rows in counts:
        line_offsets.append(lines)
        row_offsets.append(rows)
        lines += n_lines
        rows += n_rows

    def number(index, it):
        line, row = line_offsets[index], row_offsets[index]
        for text in it:
            line += 1
            if not _is_blank(text):
                yield row, (line, text)
                row += 1

    return lines_rdd.mapPartitionsWithIndex(number), rows


def _threads_per_task(sc) -> int:
    if os.environ.get("RADASSIST_TORCH_THREADS"):
        return max(1, int(os.environ["RADASSIST_TORCH_THREADS"]))
    return max(1, int(sc.getConf().get("spark.task.cpus", "1")))


def spark_predict(input_path: str | Path, output_path: str | Path, master: str | None = None,
                  engine: str | None = None, db_path: str | Path | None = None, catalog=None,
                  model_version: str | None = None, top_k: int = 3, spark=None,
                  partitions: int | None = None, spec: EngineSpec | None = None) -> SparkPredictStats:
    """Predict every order of ``input_path`` on Spark and write the records to ``output_path``."""
    require_pyspark()
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    own_session = spark is None and _no_active_session()
    spark = spark or get_session(master)
    try:
        sc = spark.sparkContext
        spec = spec or resolve_spec(engine, db_path, catalog, model_version, top_k=top_k)
        spec = replace(spec, torch_threads=_threads_per_task(sc))
        _check_model_folders(spec)
        input_path, output_path = str(input_path), str(output_path)
        if is_parquet(input_path):
            unit = "row"
            frame = spark.read.parquet(input_path)
            lines = frame.select(F.to_json(F.struct(*[F.col(c) for c in frame.columns]))).rdd.map(lambda r: r[0])
        else:
            unit = "line"
            lines = sc.textFile(input_path, minPartitions=max(2, sc.defaultParallelism))
        numbered, total = _numbered(lines)
        stats = SparkPredictStats(rows=total, model=f"{spec.name}/{spec.version}")
        out_parquet = is_parquet(output_path) or output_path.rstrip("/").lower().endswith((".parquet", ".pq"))
        if total == 0 and not out_parquet:
            _write_jsonl(Path(output_path), [])
            return stats
        n_batches = max(1, math.ceil(total / BATCH))
        n_parts = partitions or max(4 * sc.defaultParallelism, math.ceil(total / 20000))
        n_parts = max(1, min(n_parts, n_batches))
        stats.partitions = n_parts

        def partition_of(row: int) -> int:  # contiguous ranges of whole batches
            return (row // BATCH) * n_parts // n_batches

        ordered = numbered.repartitionAndSortWithinPartitions(n_parts, partition_of).map(
            lambda kv: (kv[0], kv[1][0], kv[1][1]))
        rows_df = spark.createDataFrame(ordered, "row long, line long, text string")
        loads, errors = sc.accumulator(0), sc.accumulator(0)
        pids = sc.accumulator(set(), _set_param())

        def on_load():
            loads.add(1)
            pids.add({os.getpid()})

        run = predict_frames(spec, unit, on_load)

        def run_counted(frames):
            for out in run(frames):
                errors.add(int(out["failed"].sum()))
                yield out

        result = rows_df.mapInPandas(run_counted, WORKER_SCHEMA)
        if out_parquet:
            typed = result.select("row", F.from_json("record", RECORD_DDL).alias("r")).select("row", "r.*")
            typed.write.mode("overwrite").parquet(output_path)
            if "://" not in output_path:
                _owner_only(Path(output_path))
        else:  # partitions are contiguous ranges, rows sorted within: part files in order = input order
            _write_jsonl_parts(result.select("record"), Path(output_path))
        stats.errors, stats.model_loads, stats.worker_processes = int(errors.value), int(loads.value), len(pids.value)
        stats.seconds = time.perf_counter() - t0
        return stats
    finally:
        if own_session:
            spark.stop()


def _no_active_session() -> bool:
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() is None


def _check_model_folders(spec: EngineSpec) -> None:
    """Fail before the job starts when a model folder the workers need is missing."""
    for what, path in (("model", spec.model_path), ("shortlist head", spec.shortlist_path)):
        if path and "://" not in path and not Path(path).exists():
            raise SparkPredictError(f"{spec.name} {what} folder {path} does not exist (workers need it)")


def _write_jsonl(path: Path, records: Iterable[str]) -> None:
    """One file in input order, owner-only like `radassist predict` (it quotes note text)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        for record in records:
            out.write(record + "\n")


def _write_jsonl_parts(frame, path: Path) -> None:
    """Every partition written in parallel (text parts), then joined in partition order into one file.

    (``toLocalIterator`` would compute one partition at a time: no parallelism.)"""
    import shutil

    parts_dir = path.with_name(path.name + ".parts")
    shutil.rmtree(parts_dir, ignore_errors=True)
    try:
        frame.write.mode("overwrite").text(str(parts_dir))
        _owner_only(parts_dir)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "wb") as out:
            for part in sorted(parts_dir.glob("part-*")):  # part-00000-…, part-00001-…: partition order
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def _owner_only(path: Path) -> None:
    if path.is_dir():
        os.chmod(path, 0o700)
        for child in path.rglob("*"):
            os.chmod(child, 0o700 if child.is_dir() else 0o600)


# --- reading the output back -------------------------------------------------------------------------
def record_from_parquet(row: dict) -> dict:
    """A Parquet output row -> the `radassist predict` JSON record (same keys, same order)."""
    if row.get("error") is not None:
        return {"accession": row.get("accession"), "error": row["error"]}
    suggestions = []
    for s in row.get("suggestions") or []:
        item = {"code": s["code"], "name": s["name"], "score": s["score"]}
        for key in ("conflicts", "why"):
            if s.get(key):
                item[key] = list(s[key])
        suggestions.append(item)
    flags = []
    for f in row.get("flags") or []:
        item = {k: f[k] for k in ("type", "evidence", "severity", "status")}
        item.update({k: f[k] for k in ("kind", "handled", "note") if f.get(k)})
        flags.append(item)
    out = {"accession": row["accession"], "suggestions": suggestions, "flags": flags,
           "model": row["model"], "latency_ms": row["latency_ms"]}
    if row.get("review"):
        out["review"] = True
        if row.get("review_reason"):
            out["review_reason"] = row["review_reason"]
    return out


def read_predictions(path: str | Path) -> list[dict]:
    """Prediction records from a JSONL file or a Parquet output folder, in input order."""
    p = Path(path)
    if not is_parquet(p):
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    import pyarrow.parquet as pq

    table = pq.read_table(str(p)).sort_by("row")
    return [record_from_parquet(r) for r in table.to_pylist()]


# --- which model: resolved on the driver from the site database ----------------------------------------
def resolve_spec(engine: str | None = None, db_path: str | Path | None = None, catalog=None,
                 model_version: str | None = None, torch_threads: int = 1, top_k: int = 3) -> EngineSpec:
    """The engine `radassist predict` would run (engine_factory's rules), as an `EngineSpec`.

    With a database: its catalog and settings, the registry's active version of the engine (or
    ``model_version``), the LLM's shortlist from the active embedding head. Without one: the shipped
    models. Model folders are made absolute so that workers can find them."""
    from radassist import engine_factory
    from radassist.engines import ENGINE_NAMES

    path = Path(db_path) if db_path else None
    version = engine_factory.SHIPPED
    model_path = shortlist_path = None
    if path is not None and path.exists():
        from radassist.catalog import ensure_catalog
        from radassist.registry import active_version
        from radassist.settings import load_settings
        from radassist.store import open_database

        db = open_database(path)
        try:
            with db.session() as session:
                settings = load_settings(session)
                catalog = list(catalog) if catalog is not None else ensure_catalog(session)
                name = engine or settings.engine
                if name not in ENGINE_NAMES:
                    raise engine_factory.EngineError(f"unknown engine {name!r}")
                model_path = engine_factory.resolve_model_path(session, name, model_version)
                if model_version is None:
                    active = active_version(session, name)
                    version = active.version if active else engine_factory.SHIPPED
                else:
                    version = model_version
                if name == "llm":
                    shortlist_path = engine_factory.active_model_paths(session)["embedding"]
        finally:
            db.dispose()
    else:
        if model_version not in (None, engine_factory.SHIPPED):
            raise engine_factory.EngineError(f"no database: no model version {model_version!r}")
        settings = SiteSettings()
        if catalog is None:
            from radassist.catalog import default_catalog

            catalog = default_catalog()
        name = engine or settings.engine
        if name not in ENGINE_NAMES:
            raise engine_factory.EngineError(f"unknown engine {name!r}")
    from radassist.engines.embedding import default_head_dir

    head = default_head_dir()
    if name == "embedding" and model_path is None and head:
        model_path = str(head)
    if name == "llm" and shortlist_path is None and head:
        shortlist_path = str(head)
    return EngineSpec(name=name, catalog=tuple(catalog), settings=settings,
                      model_path=str(Path(model_path).resolve()) if model_path else None,
                      shortlist_path=str(Path(shortlist_path).resolve()) if shortlist_path else None,
                      torch_threads=torch_threads, version=version, top_k=top_k,
                      knowledge_dir=os.environ.get("RADASSIST_KNOWLEDGE_DIR") or None)


__all__ = ["BATCH", "EngineSpec", "INSTALL_HINT", "SparkPredictError", "SparkPredictStats", "SparkUnavailable",
           "get_session", "is_parquet", "predict_frames", "predict_rows", "read_predictions", "record_from_parquet",
           "resolve_spec", "spark_predict", "worker_engine"]
