"""Computes sensitivity indices with SALib from a design and its outputs written by vpop's tests.

usage: salib_check.py DIR

DIR holds sobol_y.csv (k + 2 rows per base sample, SALib's layout), morris_x.csv and
morris_y.csv (trajectories of k + 1 rows, unit-cube coordinates), efast_y.csv (k blocks of N),
and meta.json {"k": k, "levels": p, "M": M}. Prints the indices as JSON.
"""
import json
import sys

import numpy as np
from SALib.analyze import fast, morris, sobol

d = sys.argv[1]
meta = json.load(open(f"{d}/meta.json"))
k = meta["k"]
problem = {"num_vars": k, "names": [f"x{i}" for i in range(k)], "bounds": [[0.0, 1.0]] * k}
out = {}
y = np.loadtxt(f"{d}/sobol_y.csv")
s = sobol.analyze(problem, y, calc_second_order=False, num_resamples=2, seed=1)
out["sobol"] = {"S1": list(map(float, s["S1"])), "ST": list(map(float, s["ST"]))}
x = np.loadtxt(f"{d}/morris_x.csv", delimiter=",", ndmin=2)
y = np.loadtxt(f"{d}/morris_y.csv")
m = morris.analyze(problem, x, y, num_levels=meta["levels"], num_resamples=2, seed=1)
out["morris"] = {
    "mu": list(map(float, m["mu"])),
    "mu_star": list(map(float, m["mu_star"])),
    "sigma": list(map(float, m["sigma"])),
}
y = np.loadtxt(f"{d}/efast_y.csv")
f = fast.analyze(problem, y, M=meta["M"], num_resamples=2, seed=1)
out["efast"] = {"S1": list(map(float, f["S1"])), "ST": list(map(float, f["ST"]))}
print(json.dumps(out))
