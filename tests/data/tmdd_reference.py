"""Reference free target (rfree) of the library's tmdd_full model with kon = 1000 (binding
fast against the dosing interval), 30 into central every 24 h x 4, for the Rosenbrock tests
of tests/solver_reference.rs: values at times, and the least value (right after the last dose).

Made with:  python3 tests/data/tmdd_reference.py
(scipy's Radau IIA at rtol 1e-12 and atol 1e-20, dose to dose; the minimum refined with a
bounded scalar search on the dense output.)
"""
import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar
cl, v, kon, koff, kint, ksyn, kdeg = 0.02, 3.0, 1000.0, 0.01, 0.05, 0.01, 0.1
def f(t, y):
    c = y[0] / v; b = kon * c * y[1] - koff * y[2]
    return [-cl / v * y[0] - b * v, ksyn - kdeg * y[1] - b, b - kint * y[2]]
segs = []; y = np.array([0, 0.1, 0.])
for i in range(4):
    y[0] += 30
    s = solve_ivp(f, [24 * i, 24 * i + 24], y, method='Radau', rtol=1e-12, atol=1e-20, dense_output=True)
    segs.append(s.sol); y = s.y[:, -1].copy()
R = lambda t: segs[min(int(t // 24), 3)](t)[1]
for t in [0.5, 24.5, 24.9, 26.5, 48.5, 72.5, 73.0, 95.0]:
    print(t, repr(R(t)))
g = np.concatenate([np.linspace(24 * i + 1e-9, 24 * i + 24, 200001) for i in range(4)])
vals = np.array([R(t) for t in g[::20]])
k = vals.argmin(); t0 = g[::20][k]
r = minimize_scalar(R, bounds=(max(t0 - 0.01, 0), min(t0 + 0.01, 96)), method='bounded', options={'xatol': 1e-12})
print('cmin', repr(r.fun), 'at', r.x)

# One 30 dose into central with kon = 1e4, to t = 10 (tests/solver_reference.rs, the first
# step with a tiny atol): cp(10) and AUC(0-10) of cp.
kon = 1e4
def g(t, y):
    c = y[0] / v; b = kon * c * y[1] - koff * y[2]
    return [-cl / v * y[0] - b * v, ksyn - kdeg * y[1] - b, b - kint * y[2], c]
s = solve_ivp(g, [0, 10], [30, 0.1, 0, 0], method='Radau', rtol=1e-12, atol=1e-20)
print('kon 1e4: cp(10)', repr(s.y[0, -1] / v), 'auc', repr(s.y[3, -1]))

# The library's idr1 with kout = 1e5 (a fast response), 100 infused over 1 to 2 h, to t = 4
# (tests/solver_reference.rs): the response at times inside the infusion.
cl, v, kin, kout, imax, ic50 = 5.0, 50.0, 10.0, 1e5, 0.9, 1.0
def h(t, u, rate):
    c = u[0] / v
    return [rate - cl / v * u[0], kin * (1 - imax * c / (ic50 + c)) - kout * u[1]]
def hj(t, u, rate):
    c = u[0] / v
    return [[-cl / v, 0], [-kin * imax * ic50 / (ic50 + c) ** 2 / v, -kout]]
segs = []; y = [0, kin / kout]
for (a, b, rate) in [(0, 1, 0), (1, 2, 100.0), (2, 4, 0)]:
    s = solve_ivp(h, (a, b), y, method='Radau', rtol=1e-12, atol=1e-20, args=(rate,), jac=hj, dense_output=True)
    segs.append((a, b, s.sol)); y = s.y[:, -1]
for t in [1.005298317, 1.013738238, 1.022122163, 1.035622479, 1.092367086, 1.621016942]:
    print('idr1', t, repr([s(t)[1] for a, b, s in segs if a < t <= b][0]))
