"""Reference solution of Robertson's chemical kinetics problem for the Rosenbrock tests.

    y1' = -k1 y1 + k3 y2 y3
    y2' =  k1 y1 - k3 y2 y3 - k2 y2^2
    y3' =  k2 y2^2
    k1 = 0.04, k2 = 3e7, k3 = 1e4, y(0) = (1, 0, 0)

Made with:  python3 tests/data/robertson_reference.py > tests/data/robertson_reference.csv
(scipy's Radau IIA, order 5, at rtol 1e-12 and atol 1e-20 with the analytic Jacobian.)
"""
import numpy as np
from scipy.integrate import solve_ivp

K1, K2, K3 = 0.04, 3e7, 1e4


def f(t, y):
    return [-K1 * y[0] + K3 * y[1] * y[2],
            K1 * y[0] - K3 * y[1] * y[2] - K2 * y[1] ** 2,
            K2 * y[1] ** 2]


def jac(t, y):
    return [[-K1, K3 * y[2], K3 * y[1]],
            [K1, -K3 * y[2] - 2 * K2 * y[1], -K3 * y[1]],
            [0.0, 2 * K2 * y[1], 0.0]]


times = [0.4, 4.0, 40.0, 400.0, 4000.0, 40000.0, 100000.0]
sol = solve_ivp(f, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau", jac=jac,
                rtol=1e-12, atol=1e-20, t_eval=times, dense_output=False)
assert sol.success, sol.message
print("t,y1,y2,y3")
for i, t in enumerate(sol.t):
    print(f"{float(t)!r},{float(sol.y[0, i])!r},{float(sol.y[1, i])!r},{float(sol.y[2, i])!r}")
