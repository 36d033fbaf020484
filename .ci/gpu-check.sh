#!/usr/bin/env bash
# The checks of an NVIDIA GPU machine (docs/gpu.md, "Checking a GPU machine") for a machine
# without a Rust toolchain: build the binaries on a build machine, carry them, run them there.
#
#   .ci/gpu-check.sh collect DIR     # here: release binary, test and bench executables,
#                                    # stripped, in DIR/bin.tar.xz (~20 MB)
#   .ci/gpu-check.sh run DIR OUT     # on the GPU machine, from the repository root: logs in OUT
#
# `run` expects the CUDA driver and NVRTC (the nvidia-cuda-nvrtc wheel's library is found when
# pip installed it), and for wgpu the Vulkan loader. Every check has its own time limit; a
# summary of each goes to OUT/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

tests=(cuda_integrate nonmem_golden steady_state_arm records_arm wgpu_integrate wgpu_integrate_f64)

collect() {
  local dir=$1
  mkdir -p "$dir"
  cargo build --release -q || exit 1
  cp target/release/vpop "$dir/"
  local exe
  for t in "${tests[@]}"; do
    exe=$(cargo test --release --no-run --message-format=json --test "$t" 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1)
    [ -n "$exe" ] && cp "$exe" "$dir/$t"
  done
  exe=$(cargo bench --no-run --message-format=json --bench pipeline 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1)
  [ -n "$exe" ] && cp "$exe" "$dir/pipeline_bench"
  strip "$dir"/* 2>/dev/null
  tar cJf "$dir/bin.tar.xz.tmp" -C "$dir" vpop pipeline_bench "${tests[@]}" &&
    mv "$dir/bin.tar.xz.tmp" "$dir/bin.tar.xz"
  rm -f "$dir/vpop" "$dir/pipeline_bench" "${tests[@]/#/$dir/}"
  ls -la "$dir"
}

# check NAME SECONDS COMMAND...: runs a command with a time limit, logs it, summarises it.
check() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  printf '%-20s rc %3d %4d s, %3d SKIPPED: %s\n' "$name" "$rc" "$((SECONDS - t0))" \
    "$(grep -c SKIPPED "$OUT/$name.txt")" \
    "$(grep -E 'test result|subject-arms/s|thrpt' "$OUT/$name.txt" | tail -1)" >> "$OUT/summary.txt"
}

run() {
  OUT=$2
  local dir=/tmp/vpop-gpu-check
  mkdir -p "$dir" && tar xJf "$1/bin.tar.xz" -C "$dir" || exit 1
  mkdir -p "$OUT" -m 700 /tmp/xdg
  export XDG_RUNTIME_DIR=/tmp/xdg
  local nv
  nv=$(python3 -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu13', 'lib'))" 2>/dev/null)
  [ -n "$nv" ] && export LD_LIBRARY_PATH="$nv:${LD_LIBRARY_PATH:-}"
  { date; nvidia-smi; nproc; "$dir/vpop" devices; } > "$OUT/machine.txt" 2>&1
  export VPOP_CUDA_RUNNER=device
  check cuda_f32 240 env VPOP_CUDA_PRECISION=f32 "$dir/cuda_integrate" --test-threads 16 --nocapture
  check cuda_f64 240 env VPOP_CUDA_PRECISION=f64 "$dir/cuda_integrate" --test-threads 16 --nocapture
  check cuda_two_threads 120 env VPOP_CUDA_DEVICES=0,0 "$dir/cuda_integrate" --test-threads 16 --nocapture split subjects_land
  check cuda_records 120 "$dir/nonmem_golden" --nocapture cuda
  check cuda_steady_state 120 "$dir/steady_state_arm" --nocapture
  check cuda_resets 120 "$dir/records_arm" --nocapture
  check wgpu 120 "$dir/wgpu_integrate" --test-threads 16 --nocapture
  local b="$dir/vpop bench examples/quickstart.toml -n 10000000 --cpu-subjects 20000"
  check bench_rtol_1e-6 150 $b --backends cpu,cuda-f32,cuda-f64
  check bench_rtol_1e-4 90 $b --backends cuda-f32,cuda-f64 --rtol 1e-4
  check host_pipeline 150 env VPOP_BENCH_SUBJECTS=10000000 "$dir/pipeline_bench" --bench host_end_to_end
  for codec in zstd none; do
    sed "s/^\[output\]$/[output]\ncompression = \"$codec\"/" examples/quickstart.toml > /tmp/q-$codec.toml
    sed -i "s|^file = \"populations/|file = \"$PWD/populations/|" /tmp/q-$codec.toml
    check "run_10M_$codec" 120 "$dir/vpop" run /tmp/q-$codec.toml --subjects 10000000 \
      --backend cuda --chunk-size 1048576 --out /tmp/q10m-$codec --overwrite
    rm -rf /tmp/q10m-$codec
  done
  cat "$OUT/summary.txt"
}

case "${1:-}" in
  collect) collect "${2:?DIR}" ;;
  run) run "${2:?DIR}" "${3:?OUT}" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
