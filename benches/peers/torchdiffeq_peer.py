"""torchdiffeq (dopri5) on the peer problem, all subjects batched as one ODE system; on a GPU when
torch has one (CUDA), else on the CPU.

usage: torchdiffeq_peer.py VPOP_DIR [N] [f64|f32] [GRID_H]

The N subjects' states are one (N, 4) tensor integrated by `odeint(method="dopri5")` at rtol
1e-6, atol 1e-9, one call per dosing interval, the dose added to the depot column between calls.
torchdiffeq takes one step size for the whole batch; its error norm is set here to the largest
per-subject RMS of the scaled error (its default, one RMS over every subject, would let a single
subject's error exceed the tolerance by up to sqrt(N)), so each step is accepted on the worst
subject. AUC is the fourth state; Cmax the largest central value on the GRID_H grid (default
0.01 h, both interval ends included) that odeint evaluates with dopri5's dense output.
The first run warms up (CUDA context, kernels); the timed run is the second, on the same subjects.
"""
import sys
import time

import torch
from torchdiffeq import odeint

from common import ATOL, COUNT, DOSE, END, EVERY, RTOL, load, report

vpop_dir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
precision = sys.argv[3] if len(sys.argv) > 3 else "f64"
grid_h = float(sys.argv[4]) if len(sys.argv) > 4 else 0.01
dt = torch.float64 if precision == "f64" else torch.float32
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
ref = load(vpop_dir, n)
assert END == COUNT * EVERY
ka, cl, v1, q, v2 = (torch.tensor(ref[k], dtype=dt, device=device) for k in ["ka", "cl", "v1", "q", "v2"])
k10, k12, k21 = cl / v1, q / v1, q / v2
evals = [0]


def field(t, y):
    evals[0] += 1
    depot, central, periph = y[:, 0], y[:, 1], y[:, 2]
    return torch.stack([
        -ka * depot,
        ka * depot - (k10 + k12) * central + k21 * periph,
        k12 * central - k21 * periph,
        central / v1,  # AUC of cp as a quadrature state
    ], dim=1)


def worst_subject_rms(scaled_error):
    return scaled_error.pow(2).mean(dim=1).sqrt().max()


steps_per_interval = int(round(EVERY / grid_h))
local = torch.linspace(0.0, EVERY, steps_per_interval + 1, dtype=torch.float64, device=device)


def run():
    evals[0] = 0
    y = torch.zeros(n, 4, dtype=dt, device=device)
    best = torch.zeros(n, dtype=dt, device=device)
    for d in range(COUNT):
        y[:, 0] += DOSE
        sol = odeint(field, y, d * EVERY + local, rtol=RTOL, atol=ATOL, method="dopri5",
                     options={"norm": worst_subject_rms})
        best = torch.maximum(best, sol[:, :, 1].max(dim=0).values)
        y = sol[-1].clone()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return y[:, 3], best / v1


with torch.no_grad():
    run()
    t0 = time.perf_counter()
    auc, cmax = run()
    elapsed = time.perf_counter() - t0
report(
    f"torchdiffeq dopri5 ({precision}, {where})",
    elapsed / n,
    auc.double().cpu().numpy(),
    cmax.double().cpu().numpy(),
    ref,
    extra=f"torchdiffeq: {evals[0]} batched right-hand-side calls for the whole run; Cmax on a {grid_h} h grid",
)
