"""Reads a vpop dataset directory with pyarrow and DuckDB and checks it against vpop's summary.

usage: check_dataset.py DATASET_DIR EXPECTED_JSON

EXPECTED_JSON holds {"rows": N, "columns": [...], "metadata": {key: value},
"medians": {arm: {column: value}}}. Exits non-zero with a message on any mismatch.
"""
import json
import math
import sys

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq

directory, expected_path = sys.argv[1], sys.argv[2]
expected = json.load(open(expected_path))
failures = []

dataset = ds.dataset(directory, format="parquet")
table = dataset.to_table()
if table.num_rows != expected["rows"]:
    failures.append(f"pyarrow rows {table.num_rows} != {expected['rows']}")
if table.column_names != expected["columns"]:
    failures.append(f"pyarrow columns {table.column_names} != {expected['columns']}")
meta = pq.read_metadata(dataset.files[0]).metadata or {}
meta = {k.decode(): v.decode() for k, v in meta.items()}
for k, v in expected["metadata"].items():
    if meta.get(k) != v:
        failures.append(f"metadata {k}: {meta.get(k)!r} != {v!r}")

con = duckdb.connect()
glob = directory.rstrip("/") + "/part-*.parquet"
(n,) = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
if n != expected["rows"]:
    failures.append(f"duckdb rows {n} != {expected['rows']}")
for arm, cols in expected["medians"].items():
    for col, want in cols.items():
        (got,) = con.execute(
            f"SELECT median({col}) FROM read_parquet('{glob}') WHERE arm = ?", [arm]
        ).fetchone()
        if got is None or not math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300):
            failures.append(f"duckdb median {arm}/{col}: {got} != vpop {want}")

# Every column decodes in DuckDB too (profiles: f32 or f16 items), to the same values.
con.execute(f"SELECT * FROM read_parquet('{glob}')").fetchall()
for name in table.column_names:
    if name.endswith("_profile"):
        items = table.column(name).combine_chunks().flatten().to_pylist()
        want = math.fsum(float(x) for x in items if x is not None)
        (got,) = con.execute(
            f"SELECT sum(list_sum({name})::DOUBLE) FROM read_parquet('{glob}')"
        ).fetchone()
        if not math.isclose(got, want, rel_tol=1e-9):
            failures.append(f"duckdb sum of {name} {got} != pyarrow {want}")
statuses = table.column("status").to_pylist()
(failed,) = con.execute(
    f"SELECT count(*) FROM read_parquet('{glob}') WHERE status <> 'ok'"
).fetchone()
if failed != sum(s != "ok" for s in statuses):
    failures.append(f"duckdb failed {failed} != pyarrow {sum(s != 'ok' for s in statuses)}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"ok: {n} rows, {len(table.column_names)} columns, medians agree")
