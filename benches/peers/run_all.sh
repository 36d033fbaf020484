#!/usr/bin/env bash
# Runs vpop and the CPU peers on the same N subjects of the peer problem and prints each one's
# figures (JSON lines). usage: benches/peers/run_all.sh [N]   (from anywhere)
set -euo pipefail
N=${1:-500}
cd "$(dirname "$0")/../.."
cargo build --release -q
OUT=out/peers
mkdir -p "$OUT"
# vpop's CPU reference on one thread, then on every core.
for threads in 1 0; do
  if [ "$threads" = 1 ]; then export RAYON_NUM_THREADS=1; else unset RAYON_NUM_THREADS; fi
  ./target/release/vpop run benches/peers/trial.toml --subjects "$N" --out "$OUT/vpop" \
    --quiet --overwrite > "$OUT/vpop.txt" 2>&1
  echo "vpop (threads: ${threads/0/all}): $(grep -m1 "subject-arms/s" "$OUT/vpop.txt")"
done
cd benches/peers
python3 scipy_peer.py "../../$OUT/vpop" "$N" RK45
python3 roadrunner_peer.py "../../$OUT/vpop" "$N"
python3 diffrax_peer.py "../../$OUT/vpop" "$N" f64
