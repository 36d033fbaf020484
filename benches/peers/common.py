"""Shared pieces of the peer scripts: the subjects vpop wrote, the regimen, the comparison."""
import glob
import json
import sys

import numpy as np
import pyarrow.dataset as ds

DOSE, EVERY, COUNT, END = 100.0, 12.0, 14, 168.0
RTOL, ATOL = 1e-6, 1e-9
COLUMNS = ["ka", "cl", "v1", "q", "v2", "cp_auc", "cp_cmax"]  # parameters, then vpop's metrics


def load(vpop_dir, n):
    """The first n subjects of a vpop run with `parameters = true`: parameters and metrics."""
    t = ds.dataset(sorted(glob.glob(f"{vpop_dir}/part-*.parquet")), format="parquet").to_table()
    t = t.sort_by("subject_id").slice(0, n)
    cols = {c: t.column(c).to_numpy() for c in COLUMNS}
    return cols


def write_csv(vpop_dir, n, path):
    """The first n subjects (parameters and vpop's metrics) as CSV, every digit kept, for the
    peers that are not Python (diffsol)."""
    cols = load(vpop_dir, n)
    table = np.column_stack([cols[c] for c in COLUMNS])
    np.savetxt(path, table, delimiter=",", fmt="%.17g", header=",".join(COLUMNS), comments="")


def rhs(p):
    ka, cl, v1, q, v2 = p
    k10, k12, k21 = cl / v1, q / v1, q / v2

    def f(t, y):
        depot, central, periph, _ = y
        return [
            -ka * depot,
            ka * depot - (k10 + k12) * central + k21 * periph,
            k12 * central - k21 * periph,
            central / v1,  # AUC of cp as a quadrature state
        ]

    return f


def report(name, per_subject_seconds, auc, cmax, ref, extra=""):
    """Prints the peer's figures and its agreement with vpop; returns them as a dict."""
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.abs(b)))
    out = {
        "peer": name,
        "subjects": int(len(auc)),
        "seconds": float(per_subject_seconds * len(auc)),
        "subjects_per_s": float(1.0 / per_subject_seconds),
        "max_rel_diff_auc_vs_vpop": rel(auc, ref["cp_auc"]),
        "max_rel_diff_cmax_vs_vpop": rel(cmax, ref["cp_cmax"]),
    }
    print(json.dumps(out))
    if extra:
        print(extra, file=sys.stderr)
    return out


if __name__ == "__main__":
    # usage: common.py VPOP_DIR N OUT.csv   writes the first N subjects for the diffsol peer
    write_csv(sys.argv[1], int(sys.argv[2]), sys.argv[3])
