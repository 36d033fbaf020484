"""Computes sensitivity indices with SALib from a design and its outputs written by vpop's tests.

usage: salib_check.py DIR

DIR holds sobol_y.csv (k + 2 rows per base sample, SALib's layout), morris_x.csv and
morris_y.csv (trajectories of k + 1 rows, unit-cube coordinates), efast_y.csv (k blocks of N),
and meta.json {"k": k, "levels": p, "M": M, "resamples": R}. Prints the indices and their
confidence half-widths (95 %, from R resamples) as JSON.
"""
import json
import sys

import numpy as np
from SALib.analyze import fast, morris, sobol

d = sys.argv[1]
meta = json.load(open(f"{d}/meta.json"))
k = meta["k"]
r = meta["resamples"]
problem = {"num_vars": k, "names": [f"x{i}" for i in range(k)], "bounds": [[0.0, 1.0]] * k}
out = {}
y = np.loadtxt(f"{d}/sobol_y.csv")
s = sobol.analyze(problem, y, calc_second_order=False, num_resamples=r, seed=1)
out["sobol"] = {k: list(map(float, s[k])) for k in ["S1", "ST", "S1_conf", "ST_conf"]}
x = np.loadtxt(f"{d}/morris_x.csv", delimiter=",", ndmin=2)
y = np.loadtxt(f"{d}/morris_y.csv")
m = morris.analyze(problem, x, y, num_levels=meta["levels"], num_resamples=r, seed=1)
out["morris"] = {k: list(map(float, m[k])) for k in ["mu", "mu_star", "sigma", "mu_star_conf"]}
y = np.loadtxt(f"{d}/efast_y.csv")
f = fast.analyze(problem, y, M=meta["M"], num_resamples=r, seed=1)
out["efast"] = {k: list(map(float, f[k])) for k in ["S1", "ST", "S1_conf", "ST_conf"]}
print(json.dumps(out))
