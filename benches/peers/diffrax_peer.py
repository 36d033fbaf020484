"""JAX diffrax (Tsit5, vmap over subjects, jit) on the peer problem; on a GPU when JAX has one.

usage: diffrax_peer.py VPOP_DIR [N] [f32|f64]

Each subject's 14 dosing intervals run in a lax.scan of diffeqsolve calls (PID step control at
rtol 1e-6, atol 1e-9), AUC as a quadrature state, Cmax from the solution saved on a 0.01 h grid
(SaveAt(ts=...): diffrax interpolates its dense output there while it steps; SaveAt(dense=True)
would keep a buffer of max_steps steps per subject and interval, terabytes once vmapped over
65 536 subjects). The first call compiles; the timed call is the second, on the same subjects.
"""
import sys
import time

import jax

precision = sys.argv[3] if len(sys.argv) > 3 else "f64"
jax.config.update("jax_enable_x64", precision == "f64")

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import ATOL, COUNT, DOSE, END, EVERY, RTOL, load, report  # noqa: E402

vpop_dir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ref = load(vpop_dir, n)
dt = jnp.float64 if precision == "f64" else jnp.float32


def field(t, y, p):
    ka, cl, v1, q, v2 = p
    depot, central, periph, _ = y
    return jnp.stack([
        -ka * depot,
        ka * depot - (cl + q) / v1 * central + q / v2 * periph,
        q / v1 * central - q / v2 * periph,
        central / v1,
    ])


term = diffrax.ODETerm(field)
solver = diffrax.Tsit5()
ctrl = diffrax.PIDController(rtol=RTOL, atol=ATOL)
grid = jnp.linspace(0.0, EVERY, int(round(EVERY / 0.01)) + 1, dtype=dt)  # both ends included


def subject(p):
    def interval(carry, d):
        y, best = carry
        a = d * EVERY
        y = y.at[0].add(DOSE)
        sol = diffrax.diffeqsolve(
            term, solver, a, a + EVERY, None, y, args=p, stepsize_controller=ctrl,
            saveat=diffrax.SaveAt(ts=a + grid), max_steps=4096,
        )
        y1 = sol.ys[-1]  # the grid's last point is the interval's end
        best = jnp.maximum(best, jnp.max(sol.ys[:, 1]) / p[2])
        return (y1, best), None

    (y, best), _ = jax.lax.scan(interval, (jnp.zeros(4, dt), jnp.zeros((), dt)), jnp.arange(COUNT, dtype=dt))
    return y[3], best


assert END == COUNT * EVERY
run = jax.jit(jax.vmap(subject))
params = jnp.stack([jnp.asarray(ref[k], dt) for k in ["ka", "cl", "v1", "q", "v2"]], axis=1)
jax.block_until_ready(run(params))
t0 = time.perf_counter()
auc, cmax = jax.block_until_ready(run(params))
elapsed = time.perf_counter() - t0
report(
    f"diffrax Tsit5 ({precision}, {jax.devices()[0].platform})",
    elapsed / n,
    np.asarray(auc, np.float64),
    np.asarray(cmax, np.float64),
    ref,
)
