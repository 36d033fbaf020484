#!/usr/bin/env bash
# The checks of an NVIDIA GPU machine (docs/gpu.md, "Checking a GPU machine") for a machine
# without a Rust toolchain: build the binaries on a build machine, carry them, run them there.
#
#   .ci/gpu-check.sh collect DIR     # here: release binary, test and bench executables,
#                                    # stripped, in DIR/bin.tar.xz (~45 MB); the Vulkan loader's
#                                    # packages in DIR/gl when apt-get can fetch them; the
#                                    # NONMEM reference outputs in DIR/reference
#   .ci/gpu-check.sh run DIR OUT     # on the GPU machine, from the repository root
#   .ci/gpu-check.sh list            # the checks, most important first
#
# `run` takes the checks in the order of `list` and stops starting new ones when its time
# budget is spent (VPOP_GPU_BUDGET seconds, default 540), so that one call of a few minutes
# brings back what matters most; VPOP_GPU_CHECKS="name name ..." runs only those (e.g. the
# rest, in a second call). It writes two files: OUT/summary.txt (one line per check: exit
# code, seconds, SKIPPED count, last result line) and OUT/logs.tar.gz (every check's full
# log and the machine's description). It expects the CUDA driver and NVRTC (the
# nvidia-cuda-nvrtc wheel's library is found when pip installed it); for wgpu, the Vulkan
# loader, unpacked from DIR/gl when the machine lacks it.
set -uo pipefail
cd "$(dirname "$0")/.."

tests=(cuda_integrate cuda_tuning nonmem_golden steady_state_arm records_arm wgpu_integrate wgpu_integrate_f64
  function_models wgpu_codegen random_regimens trial_run output_shapes late_times events
  steady_state_time steady_state_jumps)

# name, time limit (s): in order of importance. The agreement matrices (cuda_f32, cuda_f64)
# passed on an H200 on 2026-12-04 (docs/benchmarks.md), so what has changed or not run since
# comes first: the subject order (the throughput with and without it), the integration
# threads of `vpop run` (quick), where a call's time goes, the
# large models' kernels (their layout changed), the matrices on those kernels, then the peers;
# a run takes about 11 s for bench_2e-4, 65 and 103 s for the matrices.
checks=(
  "bench_2e-4 90"        # CUDA f32/f64 throughput and accuracy at the tolerance of the target
  "order 120"            # the same, subjects ordered by their fitted cost (default) against as sampled
  "run_10M 60"           # vpop run end to end: 10 M subjects, the target's one arm, defaults
  "run_10M_one_thread 60" # the same with one host thread driving the GPU (the default is two)
  "run_10M_natural_order 60" # run_10M with subjects to threads as sampled (order=natural)
  "cuda_trial_threads 60" # a trial on two host threads writes the parts of one, byte for byte
  "cuda_shapes 60"       # outputs that read t, plateaus: slopes with dg/dt, plateaus' Tmax (new)
  "cuda_late_times 30"   # f32 at 1e5 h: steps the size t moves by, records an ulp apart, no loop
  "events 90"            # located switches (events = "locate"): CUDA and Vulkan against the CPU (new)
  "trace_calls 90"       # where a backend call's time goes beside its kernels (VPOP_CUDA_TRACE)
  "large_model 120"      # a stiff 56-state model (Rodas4, sparse W) in f32 against the CPU
  "large_model_f64 120"  # the same in f64, on fewer subjects (docs/gpu.md, "Sparse W for large models")
  "cuda_f32 150"         # the f32 agreement matrix, status codes, splits (device only)
  "cuda_f64 180"         # the f64 agreement matrix
  "peers_gpu 300"        # diffrax and torchdiffeq on the GPU, same subjects as vpop
  "metrics_cost 75"      # the same kernel with fewer metrics: what the in-step searches cost
  "cuda_two_threads 90"  # two host threads driving one GPU (the several-device path)
  "wgpu 120"             # the WGSL kernels through the NVIDIA Vulkan driver
  "host_pipeline 120"    # the host side alone, 10 M subjects, every core
  "tune 150"             # bench_2e-4 with other block sizes, register caps and fast math
  "run_10M_2arms 120"    # 10 M subjects per arm of the quickstart, lz4 then zstd
  "bench_1e-6 120"       # throughput at rtol 1e-6, with the CPU on every core
  "random_regimens 240"  # random regimens and datasets against the exact solution: CUDA, Vulkan
  "cuda_records 90"      # record programs (NONMEM golden data) on the device
  "cuda_steady_state 90"
  "cuda_ss_time 60"      # steady states of a model that reads its time: CUDA and Vulkan against the CPU (new)
  "cuda_ss_jumps 60"     # steady states (arm starts, SS records, SS infusions) that stop at the jumps in time, constant and moving with the parameters: CUDA and Vulkan against the CPU (new)
  "cuda_resets 90"
  "wgpu_checks 120"      # the WGSL kernels' speed with and without wgpu's runtime checks, loops kept
  "cuda_tuning 60"       # every tuning agrees with the CPU reference
  "cuda_functions 60"    # sin, cos, tanh, atan, erf, erfc, phi, floor, ceil, … against closed forms
  "wgpu_functions 90"    # the WGSL kernels' own functions' accuracy through the NVIDIA Vulkan driver
)

# The tunings the `tune` check compares (vpop bench --cuda-variants).
variants="default;block=64;block=256;maxrreg=64;maxrreg=80;maxrreg=96;maxrreg=128;minblocks=3;minblocks=4;minblocks=6;opt=-prec-div=false;fast-math;block=256,maxrreg=64,fast-math"

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
  # The test executables find the repository's files (and `vpop` itself) where they were
  # built, and NONMEM's reference outputs beside it: `run` puts both there.
  pwd > "$dir/root"
  rm -rf "$dir/reference"
  [ -d ../shared/reference ] && cp -r ../shared/reference "$dir/reference"
  # The Vulkan loader and GL dispatch libraries for a machine that has the driver alone.
  mkdir -p "$dir/gl" /tmp/vpop-apt/partial
  local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/vpop-apt)
  { apt-get "${o[@]}" update && (cd "$dir/gl" &&
    apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  } > /dev/null 2>&1 || echo "no Vulkan loader packages (wgpu will be SKIPPED where none is installed)"
  ls -la "$dir" "$dir/gl"
}

# check NAME SECONDS COMMAND...: runs a command within its time limit and what is left of the
# budget, logs it, summarises it.
check() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then
    printf '%-20s not run: budget spent\n' "$name" >> "$OUT/summary.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  # Through bash, so that a command may be one of this script's functions (exported below).
  timeout "$limit" bash -c '"$@"' _ "$@" > "$LOGS/$name.txt" 2>&1
  local rc=$?
  printf '%-20s rc %3d %4d s, %3d SKIPPED: %s\n' "$name" "$rc" "$((SECONDS - t0))" \
    "$(grep -c SKIPPED "$LOGS/$name.txt")" \
    "$(grep -E 'test result|^(cpu|cuda-f|cuda |wgpu)|thrpt|subject-arms/s|"peer"' "$LOGS/$name.txt" |
      tail -3 | tr -s ' ' | paste -sd '|')" \
    >> "$OUT/summary.txt"
  tar czf "$OUT/logs.tar.gz" -C "$LOGS" .
}

# The peers' problem on the GPU: vpop on N subjects with the CUDA backend in f64 (the metrics
# every peer is compared with) and in f32 (its time), then diffrax and torchdiffeq on the same
# subjects in f32 and f64, each printing its time and its largest difference from vpop.
peers_gpu() {
  local n=65536 d=/tmp/vpop-peers p
  for p in f64 f32; do
    sed -e "s/^backend = \"cpu\"/backend = \"cuda\"\nprecision = \"$p\"/" \
      -e "s|^file = \"populations/|file = \"$PWD/populations/|" benches/peers/trial.toml > $d-$p.toml
    "$BIN/vpop" run $d-$p.toml --subjects $n --out $d/vpop-$p --overwrite --quiet || return 1
  done
  (cd benches/peers &&
    for p in f32 f64; do
      timeout 100 python3 diffrax_peer.py $d/vpop-f64 $n $p
      timeout 100 python3 torchdiffeq_peer.py $d/vpop-f64 $n $p
    done)
}

# vpop run of the quickstart with 10 M subjects through CUDA: ARMS 1 keeps its first arm only
# (100 mg q12h x 14, the problem of the end-to-end target), 2 both; CODEC is the compression.
run_10m() {
  local arms=$1 codec=$2 spec=/tmp/q-$1-$2.toml
  shift 2
  awk -v arms="$arms" '/^\[\[arm\]\]/{n++} /^\[/{skip=(n>arms && /^\[\[arm\]\]/)} !skip' \
    examples/quickstart.toml |
    sed -e "s/^\[output\]$/[output]\ncompression = \"$codec\"/" \
      -e "s/^name = \"2-cmt oral: .*/name = \"2-cmt oral, quickstart: $arms arm(s), $codec\"/" > "$spec"
  sed -i "s|^file = \"populations/|file = \"$PWD/populations/|" "$spec"
  # Default chunks (parts of 65 536 subjects, encoded in parallel), merged into calls of 2^20.
  # Further arguments go to vpop run (e.g. --integrators 1).
  "$BIN/vpop" run "$spec" --subjects 10000000 --backend cuda \
    --out "/tmp/q10m-$arms-$codec" --overwrite "$@"
  local rc=$?
  rm -rf "/tmp/q10m-$arms-$codec"
  return $rc
}

# The kernel's throughput with the quickstart's metrics cut down: AUC alone (no search inside a
# step), AUC and Cmax (Brent's search for each peak), all six (also threshold crossings). A
# search runs in some threads of a warp while the others wait (docs/gpu.md, "Searches inside
# a step"); the differences between the three rows are what the searches cost on the device.
metrics_cost() {
  local spec=/tmp/metrics-cost.toml label m
  for label in auc auc+cmax all_six; do
    case $label in
      auc) m='["auc"]' ;;
      auc+cmax) m='["auc", "cmax"]' ;;
      *) m='["auc", "cmax", "tmax", "ctrough", "auc_last_interval", "time_above(1.0)"]' ;;
    esac
    sed -e "s/^metrics = .*/metrics = $m/" -e '/^target = /d' \
      -e "s|^name = \"2-cmt oral: .*|name = \"quickstart, metrics: $label\"|" examples/quickstart.toml > "$spec"
    echo "== metrics: $label"
    "$BIN/vpop" bench "$spec" -n "${VPOP_METRICS_COST_N:-4000000}" --cpu-subjects 2000 \
      --backends "${VPOP_METRICS_COST_BACKENDS:-cuda-f32,cuda-f64}" --rtol 2e-4 || return 1
  done
}

# The quickstart on the WGSL kernels compiled with each VPOP_WGPU_CHECKS setting (docs/gpu.md,
# "Runtime checks in the WGSL kernels"): what wgpu's loop counters and index clamps cost.
wgpu_checks() {
  local c
  for c in checked unbounded-loops unchecked; do
    echo "== VPOP_WGPU_CHECKS=$c"
    VPOP_WGPU_CHECKS=$c "$BIN/vpop" bench examples/quickstart.toml -n "${VPOP_WGPU_CHECKS_N:-2000000}" \
      --cpu-subjects 2000 --backends wgpu --rtol 2e-4 || return 1
  done
  # The loops over the model's sizes and the metrics kept as loops instead of unrolled (the
  # default; docs/gpu.md, "Unrolled loops").
  echo "== VPOP_WGSL_UNROLL=0"
  VPOP_WGSL_UNROLL=0 "$BIN/vpop" bench examples/quickstart.toml -n "${VPOP_WGPU_CHECKS_N:-2000000}" \
    --cpu-subjects 2000 --backends wgpu --rtol 2e-4 || return 1
}

export -f peers_gpu run_10m metrics_cost wgpu_checks

one() {
  local b=("$BIN/vpop" bench examples/quickstart.toml -n 10000000 --cpu-subjects 20000)
  case $1 in
    # With the kernel's operations counted on the host (needs a C++ compiler there): the
    # FLOP rate of each CUDA row.
    bench_2e-4) check "$1" "$2" "${b[@]}" --backends cuda-f32,cuda-f64 --rtol 2e-4 --count-ops 1024 ;;
    order) check "$1" "$2" "${b[@]}" --backends cuda-f32,cuda-f64 --rtol 2e-4 --cuda-variants "default;order=natural" ;;
    tune) check "$1" "$2" "$BIN/vpop" bench examples/quickstart.toml -n 4000000 --cpu-subjects 20000 \
      --backends cuda-f32,cuda-f64 --rtol 2e-4 --cuda-variants "$variants" ;;
    cuda_tuning) check "$1" "$2" "$BIN/cuda_tuning" --test-threads 1 --nocapture ;;
    bench_1e-6) check "$1" "$2" "${b[@]}" --backends cpu,cuda-f32,cuda-f64 ;;
    large_model) check "$1" "$2" "$BIN/vpop" bench examples/qsp_large.toml -n 200000 --cpu-subjects 2000 \
      --backends cpu,cuda-f32 --count-ops 16 ;;
    large_model_f64) check "$1" "$2" "$BIN/vpop" bench examples/qsp_large.toml -n 10000 --cpu-subjects 2000 \
      --backends cuda-f64 ;;
    cuda_f32) check "$1" "$2" env VPOP_CUDA_PRECISION=f32 "$BIN/cuda_integrate" --test-threads 16 --nocapture ;;
    cuda_f64) check "$1" "$2" env VPOP_CUDA_PRECISION=f64 "$BIN/cuda_integrate" --test-threads 16 --nocapture ;;
    cuda_two_threads) check "$1" "$2" env VPOP_CUDA_DEVICES=0,0 "$BIN/cuda_integrate" --test-threads 16 --nocapture split subjects_land ;;
    cuda_records) check "$1" "$2" "$BIN/nonmem_golden" --nocapture cuda ;;
    random_regimens) check "$1" "$2" "$BIN/random_regimens" --nocapture cuda_device wgpu ;;
    cuda_steady_state) check "$1" "$2" "$BIN/steady_state_arm" --nocapture ;;
    cuda_resets) check "$1" "$2" "$BIN/records_arm" --nocapture ;;
    cuda_ss_time) check "$1" "$2" "$BIN/steady_state_time" --nocapture ;;
    cuda_ss_jumps) check "$1" "$2" "$BIN/steady_state_jumps" --nocapture ;;
    metrics_cost) check "$1" "$2" metrics_cost ;;
    run_10M) check "$1" "$2" run_10m 1 lz4 ;;
    run_10M_one_thread) check "$1" "$2" run_10m 1 lz4 --integrators 1 ;;
    run_10M_natural_order) check "$1" "$2" env VPOP_CUDA_TUNING=order=natural bash -c 'run_10m 1 lz4' ;;
    cuda_trial_threads) check "$1" "$2" "$BIN/trial_run" --nocapture cuda_on_two_host_threads ;;
    trace_calls) check "$1" "$2" bash -c 'VPOP_CUDA_TRACE=1 "$BIN/vpop" bench examples/quickstart.toml \
      -n 4000000 --cpu-subjects 2000 --backends cuda-f32,cuda-f64 --rtol 2e-4 && VPOP_CUDA_TRACE=1 run_10m 1 lz4' ;;
    run_10M_2arms) check "$1" "$2" bash -c 'run_10m 2 lz4 && run_10m 2 zstd' ;;
    peers_gpu) check "$1" "$2" peers_gpu ;;
    host_pipeline) check "$1" "$2" env VPOP_BENCH_SUBJECTS=10000000 "$BIN/pipeline_bench" --bench host_end_to_end ;;
    wgpu) check "$1" "$2" "$BIN/wgpu_integrate" --test-threads 16 --nocapture ;;
    wgpu_checks) check "$1" "$2" wgpu_checks ;;
    cuda_functions) check "$1" "$2" "$BIN/function_models" --nocapture --skip emulated cuda_kernels cuda_probit ;;
    cuda_shapes) check "$1" "$2" "$BIN/output_shapes" --nocapture --skip emulated cuda_kernels ;;
    cuda_late_times) check "$1" "$2" "$BIN/late_times" --nocapture --skip emulated cuda_kernels cuda_records ;;
    wgpu_functions) check "$1" "$2" "$BIN/wgpu_codegen" --test-threads 4 --nocapture accurate ;;
    events) check "$1" "$2" "$BIN/events" --nocapture ;;
    *) echo "unknown check $1" >> "$OUT/summary.txt" ;;
  esac
}

run() {
  OUT=$2
  DEADLINE=$((SECONDS + ${VPOP_GPU_BUDGET:-540}))
  export BIN=/tmp/vpop-gpu-check
  LOGS=/tmp/vpop-gpu-logs
  mkdir -p "$BIN" "$LOGS" "$OUT" /tmp/xdg && chmod 700 /tmp/xdg &&
    tar xJf "$1/bin.tar.xz" -C "$BIN" || exit 1
  export XDG_RUNTIME_DIR=/tmp/xdg PYTHONUNBUFFERED=1 VPOP_CUDA_RUNNER=device
  local nv
  nv=$(python3 -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu13', 'lib'))" 2>/dev/null)
  [ -n "$nv" ] && export LD_LIBRARY_PATH="$nv:${LD_LIBRARY_PATH:-}"
  if ! ldconfig -p | grep -q libvulkan && compgen -G "$1/gl/*.deb" > /dev/null; then
    for f in "$1"/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd}
  # The paths compiled into the test executables: the repository's root on the build machine
  # (a link to this one where it differs), its target/release/vpop, ../shared/reference.
  local root
  root=$(cat "$1/root" 2>/dev/null || pwd)
  if [ "$root" != "$PWD" ] && [ ! -e "$root" ]; then
    mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"
  fi
  if [ ! -e "$root/target/release/vpop" ]; then
    mkdir -p "$root/target/release" && cp "$BIN/vpop" "$root/target/release/vpop"
  fi
  if [ -d "$1/reference" ] && [ ! -e "$root/../shared/reference" ]; then
    mkdir -p "$root/../shared" && cp -r "$1/reference" "$root/../shared/reference"
  fi
  { date; nvidia-smi; nproc; "$BIN/vpop" devices; } > "$LOGS/machine.txt" 2>&1
  : > "$OUT/summary.txt"
  local c name limit
  for c in "${checks[@]}"; do
    read -r name limit <<< "$c"
    if [ -n "${VPOP_GPU_CHECKS:-}" ] && [[ " $VPOP_GPU_CHECKS " != *" $name "* ]]; then
      continue
    fi
    one "$name" "$limit"
  done
  tar czf "$OUT/logs.tar.gz" -C "$LOGS" .
  cat "$OUT/summary.txt"
}

case "${1:-}" in
  collect) collect "${2:?DIR}" ;;
  run) run "${2:?DIR}" "${3:?OUT}" ;;
  list) printf '%s\n' "${checks[@]}" ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
