"""`radassist spark-predict` on a real local[2] Spark session: the same records as the in-process engine
(`radassist predict`), bad rows as error records, JSONL and Parquet in and out."""
from __future__ import annotations

import json

import pytest

pyspark = pytest.importorskip("pyspark")

from radassist import engine_factory  # noqa: E402
from radassist.catalog import default_catalog  # noqa: E402
from radassist.cli import main  # noqa: E402
from radassist.ingest import order_from_record  # noqa: E402
from radassist.scale import spark_predict as sp  # noqa: E402
from radassist.synthetic import generate, write_jsonl  # noqa: E402

pytestmark = pytest.mark.spark

BAD_LINES = ['not json at all', '{"accession": "BAD-1"}', '[1, 2]']


@pytest.fixture(scope="module")
def spark(_session_cache_dir, tmp_path_factory):
    # The Python workers inherit the environment the JVM starts with, before any test's own settings:
    # give them the test run's folders, never the real user cache and data folders.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RADASSIST_CACHE_DIR", _session_cache_dir)
        env.setenv("RADASSIST_DATA_DIR", str(tmp_path_factory.mktemp("spark-data")))
        session = sp.get_session("local[2]", "radassist-tests")
        yield session
        session.stop()


@pytest.fixture(scope="module")
def orders_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark") / "orders.jsonl"
    write_jsonl(generate(default_catalog(), per_protocol=3, seed=11), path)  # 231 synthetic orders
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[10:10] = BAD_LINES[:1]
    lines[50:50] = ["", BAD_LINES[1]]
    lines.append(BAD_LINES[2])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _without_latency(records):
    return [{k: v for k, v in r.items() if k != "latency_ms"} for r in records]


def _assert_same(spark_records, expected):
    """Exactly the same records (the same 64-order batches as `radassist predict`), latency apart."""
    assert [r.get("accession") for r in spark_records] == [r.get("accession") for r in expected]
    assert _without_latency(spark_records) == _without_latency(expected)


def test_jsonl_to_parquet_matches_radassist_predict_and_bad_rows_are_error_records(spark, orders_file, tmp_path):
    expected_path = tmp_path / "predict.jsonl"
    main(["predict", "--input", str(orders_file), "--output", str(expected_path), "--db", str(tmp_path / "no.db")])
    expected = sp.read_predictions(expected_path)

    out = tmp_path / "predictions.parquet"
    stats = sp.spark_predict(orders_file, out, spark=spark, db_path=tmp_path / "no.db")
    got = sp.read_predictions(out)
    assert stats.rows == len(expected) == 231 + 3 and stats.errors == 3
    # more partitions than cores, yet the model is built once per Python worker process
    assert stats.partitions >= 3 and 1 <= stats.model_loads == stats.worker_processes <= 2
    _assert_same(got, expected)
    errors = [r for r in got if "error" in r]
    assert [e["error"].split(":")[0] for e in errors] == ["line 11", "line 52", "line 235"]
    assert errors[1]["accession"] == "BAD-1" and "ordered_exam" in errors[1]["error"]
    assert all("suggestions" in r and r["model"].startswith("embedding/") for r in got if "error" not in r)
    assert (out.stat().st_mode & 0o077) == 0  # the records quote note text: owner-only


def test_parquet_in_jsonl_out_is_deterministic_and_matches_the_in_process_engine(spark, orders_file, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in orders_file.read_text(encoding="utf-8").splitlines()[:80]
               if line.startswith("{") and "ordered_exam" in line]
    parquet_in = tmp_path / "orders.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet_in)

    engine = engine_factory.build_engine("embedding", default_catalog())
    orders = [order_from_record(r) for r in records]
    expected = [p.to_json() for start in range(0, len(orders), sp.BATCH)  # the batches of `radassist predict`
                for p in engine.predict_batch(orders[start:start + sp.BATCH], top_k=3)]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sp.spark_predict(parquet_in, first, spark=spark)
    sp.spark_predict(parquet_in, second, spark=spark, partitions=3)
    a, b = sp.read_predictions(first), sp.read_predictions(second)
    assert _without_latency(a) == _without_latency(b)  # partitioning does not change the answer
    _assert_same(a, expected)


def test_the_command_reads_jsonl_and_writes_jsonl(spark, orders_file, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    code = main(["spark-predict", "--input", str(orders_file), "--output", str(out), "--master", "local[2]",
                 "--engine", "embedding", "--db", str(tmp_path / "no.db")])
    assert code == 1  # some rows were errors; the job still wrote every record
    records = sp.read_predictions(out)
    assert len(records) == 234 and sum("error" in r for r in records) == 3
    assert "231 predicted, 3 errors" in capsys.readouterr().err
