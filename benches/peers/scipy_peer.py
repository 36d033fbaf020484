"""scipy solve_ivp on the peer problem, one subject at a time (one core).

usage: scipy_peer.py VPOP_DIR [N] [METHOD]   (METHOD: RK45 = Dormand–Prince 5(4), default)

Each dosing interval is integrated with dense output; AUC is a quadrature state, Cmax the
maximum of the dense output on a 0.01 h grid (plus the step ends).
"""
import sys
import time

import numpy as np
from scipy.integrate import solve_ivp

from common import ATOL, COUNT, DOSE, END, EVERY, RTOL, load, report, rhs

vpop_dir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
method = sys.argv[3] if len(sys.argv) > 3 else "RK45"
ref = load(vpop_dir, n)
auc, cmax = np.zeros(n), np.zeros(n)
stops = [i * EVERY for i in range(COUNT)] + [END]
t0 = time.perf_counter()
for i in range(n):
    p = tuple(ref[k][i] for k in ["ka", "cl", "v1", "q", "v2"])
    f = rhs(p)
    y = np.zeros(4)
    best = 0.0
    for a, b in zip(stops[:-1], stops[1:]):
        y[0] += DOSE
        sol = solve_ivp(f, (a, b), y, method=method, rtol=RTOL, atol=ATOL, dense_output=True)
        grid = np.union1d(np.arange(a, b, 0.01), sol.t)
        best = max(best, float(np.max(sol.sol(grid)[1] / p[2])))
        y = sol.y[:, -1].copy()
    auc[i], cmax[i] = y[3], best
elapsed = time.perf_counter() - t0
report(f"scipy solve_ivp {method}", elapsed / n, auc, cmax, ref)
