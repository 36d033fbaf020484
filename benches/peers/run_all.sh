#!/usr/bin/env bash
# Runs vpop and the CPU peers on the same N subjects of the peer problem and prints each one's
# figures (JSON lines). usage: benches/peers/run_all.sh [N]   (from anywhere)
# VPOP_NO_BUILD=1 uses ./target/release/vpop as it is; the diffsol peer builds into
# benches/peers/diffsol/target, or into $CARGO_TARGET_DIR when that is set.
set -euo pipefail
N=${1:-500}
cd "$(dirname "$0")/../.."
[ "${VPOP_NO_BUILD:-0}" = 1 ] || cargo build --release -q
cargo build --release -q --manifest-path benches/peers/diffsol/Cargo.toml
DIFFSOL_PEER="$(realpath "${CARGO_TARGET_DIR:-benches/peers/diffsol/target}")/release/vpop-peer-diffsol"
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
python3 common.py "../../$OUT/vpop" "$N" "../../$OUT/subjects.csv"
"$DIFFSOL_PEER" "../../$OUT/subjects.csv" "$N"
python3 scipy_peer.py "../../$OUT/vpop" "$N" RK45
python3 roadrunner_peer.py "../../$OUT/vpop" "$N"
python3 diffrax_peer.py "../../$OUT/vpop" "$N" f64
