#!/bin/bash
# One stage of this round's H200 measurements per call (a device call runs at most 10 min).
# Run from the repository root once vLLM 0.26.0, Ray 2.60 and this project's wheels are installed:
#   bash tools/gpu/h200_round.sh engine|serve                    (engine, serve)
#   bash tools/gpu/h200_round.sh s3gen|engine15|serve15          (tools/gpu/gpu_serving.py,
#     one part per call; the parts come back under $OUT/parts and `gpu_serving report` joins them)
#   bash tools/gpu/h200_round.sh proof-exact|proof-served|proof-stream|proof-cjk (the served T3 proof,
#     proof-http runs both HTTP parts;
#     tools/gpu/t3_vllm_proof.py; parts under $OUT/t3-served, joined by its `report`)
#   bash tools/gpu/h200_round.sh turbo-proof        (tools/gpu/turbo_proof.py exact + served;
#     parts under $OUT/turbo-proof, joined here by `turbo_proof report`)
#   bash tools/gpu/h200_round.sh turbo-proof-load   (turbo_proof load: preemption and the
#     served chi-square, ~3 min; beside the turbo-proof parts, report re-joined. $OUT starts
#     empty each call: TURBO_PARTS=DIR names an earlier call's exact.json/served.json to join)
#   bash tools/gpu/h200_round.sh turbo-serving|turbo-serving-original|turbo-serving-http
#     (gpu_serving's engine part for Turbo, then for the multilingual model, then Turbo over
#     HTTP; parts under $OUT/turbo-serving, joined here by `gpu_serving turbo-report`)
#   bash tools/gpu/h200_round.sh checkpoint        (only writes the random checkpoint, ~40 s:
#     chain it after the install so the measuring call does not pay for it;
#     `checkpoints` writes the Turbo one too)
#   bash tools/gpu/h200_round.sh perf28            (S3Gen levers, then T3 alone / S3Gen alone /
#     engine c=64 over windows: 8-9.5 min once the checkpoint exists, too close to the
#     10 min limit to add the checkpoint; safer as two calls back to back on the warm
#     machine: perf28-s3gen <= 8.5 min (+40 s checkpoint), then perf28-engine <= 5.5 min)
# Results and logs go to $OUT (the device tool copies them back).
set -uo pipefail
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ALLOW_INSECURE_SERIALIZATION=1
# `serve run` refuses to start without the proxy middleware (deployments/proxy_errors.py).
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.proxy_errors:proxy_middlewares
# The served configuration marks audio with Perth (the CPU deployment); the carry must
# hold it (EXTRA_WHEELS="resemble-perth==1.0.1" ../shared/device/prepare-vllm.sh). Without
# it the audio replicas fail to start, so say so and measure unmarked rather than lose a call.
python -c "import perth" 2>/dev/null || { echo "resemble-perth missing: WATERMARK=off"; export WATERMARK=off; }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
CKPT=${CKPT:-/tmp/ckpt}
TEXTS=${TEXTS:-.device/data/multilingual.json}  # shared/data/texts, carried
ensure_checkpoint() {
  if [[ ! -f $CKPT/.done ]]; then
    python -m tools.write_checkpoint "$CKPT" --multilingual >"$OUT/checkpoint.log" 2>&1 && touch "$CKPT/.done"
    tail -2 "$OUT/checkpoint.log"
  fi
}
# Until the GPU's memory is back (a server of an earlier call may still hold it: seen on
# an H200, 66 of 140 GiB free a minute after the last call's `ray stop`).
gpu_free() {
  (serve shutdown -y; ray stop --force) >/dev/null 2>&1
  for i in $(seq 1 60); do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    [[ ${used:-0} -lt 2000 ]] && return 0
    sleep 2
  done
  echo "GPU memory still in use: ${used} MiB"
}
# `serve run` with the vllm engine as served, forcing every item to $1 tokens.
start_server() {
  gpu_free
  CHATTERBOX_ENGINE=vllm CHATTERBOX_MODEL_DIR=$CKPT VLLM_MAX_BATCH_SIZE=16 VLLM_COMPILE=true \
    CHATTERBOX_BENCH_FORCED_TOKENS=$1 CHATTERBOX_GPU_MEMORY_UTILIZATION=0.5 \
    setsid serve run serve_config.yaml >"$OUT/serve-$1.log" 2>&1 &
  for i in $(seq 1 100); do
    sleep 3
    curl -sf localhost:8000/health >/dev/null && break
  done
  curl -s localhost:8000/health | head -c 300; echo
}
stop_server() {
  serve shutdown -y >/dev/null 2>&1; ray stop --force >/dev/null 2>&1
  grep -i "traceback\|error" "$OUT/serve-$1.log" | head -5
  # The next server's vLLM refuses to start until the last one's memory is back
  # (seen on an H100: 35.7 of 79 GiB free right after `ray stop`).
  for i in $(seq 1 60); do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    [[ ${used:-0} -lt 2000 ]] && break
    sleep 2
  done
}
TCKPT=/tmp/ckpt-turbo
ensure_turbo_checkpoint() {
  if [[ ! -f $TCKPT/.done ]]; then
    python -m tools.write_checkpoint "$TCKPT" --turbo >"$OUT/checkpoint-turbo.log" 2>&1 && touch "$TCKPT/.done"
    tail -2 "$OUT/checkpoint-turbo.log"
  fi
}
quiet() { grep -v "^INFO\|^(EngineCore\|^DEBUG\|^WARNING\|^(pid=" | tail -${1:-40}; }
# vLLM finds our model through the package's entry point; a checkout that is not
# pip-installed has none, so declare it beside the carried packages.
plugin=/tmp/site/chatterbox_serve-0.1.0.dist-info
if [[ -d /tmp/site && ! -d $plugin ]]; then
  mkdir -p $plugin && printf 'Metadata-Version: 2.1\nName: chatterbox-serve\nVersion: 0.1.0\n' >$plugin/METADATA
  printf '[vllm.general_plugins]\nchatterbox_t3 = chatterbox_serve.engines.vllm.plugin:register\n' \
    >$plugin/entry_points.txt
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
case ${1:?stage} in
  proof-exact)
    ensure_checkpoint
    timeout 480 python -m tools.gpu.t3_vllm_proof exact --checkpoint $CKPT --parts "$OUT/t3-served" \
      2>&1 | tee "$OUT/proof-exact.log" | quiet
    ;;
  proof-served)
    ensure_checkpoint
    VLLM_COMPILE=true VLLM_MAX_BATCH_SIZE=16 timeout 540 python -m tools.gpu.t3_vllm_proof served \
      --checkpoint $CKPT --parts "$OUT/t3-served" 2>&1 | tee "$OUT/proof-served.log" | quiet
    ;;
  proof-http|proof-stream)
    ensure_checkpoint
    start_server ${STREAM_TOKENS:-300}
    timeout 200 python -m tools.gpu.t3_vllm_proof stream --parts "$OUT/t3-served" 2>&1 | quiet 8
    curl -s localhost:8000/info >"$OUT/stream-info.json"
    stop_server ${STREAM_TOKENS:-300}
    ;;&
  proof-http|proof-cjk)
    ensure_checkpoint
    forced=$(python -m tools.gpu.t3_vllm_proof budget --texts "$TEXTS" | tail -1)
    start_server "$forced"
    timeout 300 python -m tools.gpu.t3_vllm_proof cjk --parts "$OUT/t3-served" --texts "$TEXTS" \
      --forced "$forced" 2>&1 | quiet 8
    stop_server "$forced"
    ;;
  turbo-proof)
    ensure_turbo_checkpoint
    timeout 240 python -m tools.gpu.turbo_proof exact --checkpoint $TCKPT --parts "$OUT/turbo-proof" \
      2>&1 | tee "$OUT/turbo-proof-exact.log" | quiet 12
    VLLM_COMPILE=true VLLM_MAX_BATCH_SIZE=16 timeout 270 python -m tools.gpu.turbo_proof served \
      --checkpoint $TCKPT --parts "$OUT/turbo-proof" 2>&1 | tee "$OUT/turbo-proof-served.log" | quiet 12
    python -m tools.gpu.turbo_proof report --parts "$OUT/turbo-proof" --out "$OUT/turbo-equivalence-h200.json"
    ;;
  turbo-proof-load)
    ensure_turbo_checkpoint
    VLLM_COMPILE=true VLLM_MAX_BATCH_SIZE=16 timeout 330 python -m tools.gpu.turbo_proof load \
      --checkpoint $TCKPT --parts "$OUT/turbo-proof" 2>&1 | tee "$OUT/turbo-proof-load.log" | quiet 12
    [[ -n ${TURBO_PARTS:-} ]] && cp -n "$TURBO_PARTS"/exact.json "$TURBO_PARTS"/served.json "$OUT/turbo-proof/"
    python -m tools.gpu.turbo_proof report --parts "$OUT/turbo-proof" --out "$OUT/turbo-equivalence-h200.json"
    ;;
  turbo-serving)
    ensure_turbo_checkpoint
    # (Turbo's meanflow S3Gen runs eagerly whatever the setting: recorded as it runs.)
    timeout 480 python -m tools.gpu.gpu_serving engine --family chatterbox-turbo --checkpoint $TCKPT \
      --parts "$OUT/turbo-serving" --s3gen-compile off 2>&1 | tee "$OUT/turbo-serving.log" | quiet 20
    ;;
  turbo-serving-original)
    ensure_checkpoint
    timeout 540 python -m tools.gpu.gpu_serving engine --family chatterbox-multilingual --checkpoint $CKPT \
      --parts "$OUT/turbo-serving" --s3gen-compile ${S3GEN_COMPILE:-graphs} 2>&1 \
      | tee "$OUT/turbo-serving-original.log" | quiet 20
    ;;
  turbo-serving-http)
    ensure_turbo_checkpoint
    export CHATTERBOX_ENGINE=vllm CHATTERBOX_MODELS=chatterbox-turbo CHATTERBOX_TURBO_MODEL_DIR=$TCKPT \
      VLLM_MAX_BATCH_SIZE=16 VLLM_COMPILE=true CHATTERBOX_BENCH_FORCED_TOKENS=150 \
      CHATTERBOX_GPU_MEMORY_UTILIZATION=0.5 CHATTERBOX_S3GEN_MAX_WAIT_S=0
    setsid serve run serve_config.yaml >"$OUT/serve-turbo.log" 2>&1 &
    for i in $(seq 1 100); do
      sleep 3
      curl -sf localhost:8000/health >/dev/null && break
    done
    curl -s localhost:8000/health | head -c 400; echo
    timeout 300 python -m tools.gpu.gpu_serving serve --family chatterbox-turbo --parts "$OUT/turbo-serving" \
      2>&1 | tail -12
    serve shutdown -y >/dev/null 2>&1; ray stop --force >/dev/null 2>&1
    grep -i "error\|traceback" "$OUT/serve-turbo.log" | head -5
    ;;
  engine)
    ensure_checkpoint
    timeout 400 python -m tools.gpu.engine_bench --checkpoint $CKPT --out "$OUT/engine-h200.json" \
      ${ENGINE_ARGS:-} 2>&1 | tee "$OUT/engine.log" | grep -v "^INFO\|^(EngineCore" | tail -30
    timeout 150 python -m tools.gpu.torch_engine_bench --checkpoint $CKPT --multilingual \
      --tokens 150 --batches 64 --out "$OUT/torch-engine-same-lease.json" 2>&1 | tail -4
    ;;
  serve)
    ensure_checkpoint
    export CHATTERBOX_ENGINE=vllm CHATTERBOX_MODEL_DIR=$CKPT VLLM_MAX_BATCH_SIZE=64 VLLM_COMPILE=true \
      CHATTERBOX_BENCH_FORCED_TOKENS=150 CHATTERBOX_GPU_MEMORY_UTILIZATION=0.5 CHATTERBOX_S3GEN_BATCH_SIZE=64
    gpu_free
    setsid serve run serve_config.yaml >"$OUT/serve.log" 2>&1 &
    for i in $(seq 1 100); do
      sleep 3
      curl -sf localhost:8000/health >/dev/null && break
    done
    curl -s localhost:8000/health | head -c 600; echo
    timeout 240 python -m tools.gpu.serve_bench --out "$OUT/serve-h200.json" --levels 1,64 --per-worker 2 2>&1 | tail -5
    serve shutdown -y >/dev/null 2>&1; ray stop --force >/dev/null 2>&1
    tail -5 "$OUT/serve.log"
    ;;
  checkpoint)
    ensure_checkpoint
    ;;
  checkpoints)
    # Both families' random checkpoints (~40 s each), chained after the install so the
    # proof calls that follow spend their 10 minutes on the proofs.
    ensure_checkpoint
    ensure_turbo_checkpoint
    ;;
  perf28|perf28-s3gen|perf28-engine)
    # Parts and the compile cache live in /tmp, which outlives a call while the machine
    # stays warm ($OUT does not), so the two halves may run as two calls.
    ensure_checkpoint
    PARTS=/tmp/perf28-parts CACHE=/tmp/s3gen-compile-cache
    mkdir -p $PARTS "$OUT/parts"
    if [[ $1 != perf28-engine ]]; then
      # S3Gen alone, 10 steps, batch 64, quality beside each: eager bf16, the whole-estimator
      # compile (cold; its artifacts go to $CACHE), the served CUDA graphs, float8 linear
      # layers, float8 under regional compilation; the split call, with more time, also
      # regional compilation in bf16. A variant the budget cuts is listed as such.
      variants=bf16-bias,bf16-compile,bf16-graphs,bf16-fp8-bias,bf16-fp8-regional budget=215
      [[ $1 == perf28-s3gen ]] && variants=$variants,bf16-regional budget=380
      # (tools.gpu.s3gen_speed directly, as `gpu_serving s3gen` runs it, so that `timeout`
      # reaches the process that holds the GPU; it writes the s3gen part's JSON.)
      timeout $((${BUDGET_S:-$budget} + 35)) python -m tools.gpu.s3gen_speed \
        --checkpoint $CKPT --out $PARTS/s3gen.json --batch-sizes 64 --steps 10 \
        --budget-s ${BUDGET_S:-$budget} --compile-cache $CACHE \
        --variants ${S3GEN_VARIANTS:-$variants} >"$OUT/perf28-s3gen.log" 2>&1
      grep "^|\|^profile\|^FAILED\|^best" "$OUT/perf28-s3gen.log"
      ls -l $CACHE 2>/dev/null | tail -2
      if [[ $1 == perf28-s3gen ]]; then
        # Where one eager bf16 step's time goes, kernel by kernel (about 40 s), for the next
        # lever; only in the split call, which has the time.
        timeout 90 python tools/s3gen_profile.py --batch-sizes 64 --precisions bf16 \
          --attention bias,none --trace 64:bf16:bias >"$OUT/s3gen-trace.log" 2>&1
        grep '"batch"' "$OUT/s3gen-trace.log"
      fi
    fi
    if [[ $1 != perf28-s3gen ]]; then
      # The engine takes the whole-estimator compile if it won inside the bounds above
      # (its start then compiles from $CACHE, as a restarted replica would: first_call_s),
      # else the served graphs. For each figure an 8 s warm-up (about one item's time in the
      # engine at c=64, so the pipeline is full), then two 8 s windows.
      mode=${S3GEN_COMPILE:-$(python -m tools.gpu.gpu_serving pick-compile --parts $PARTS)}
      echo "engine S3Gen compile: $mode"
      timeout ${ENGINE_TIMEOUT:-320} python -m tools.gpu.gpu_serving engine --checkpoint $CKPT \
        --parts $PARTS --s3gen-compile "$mode" --s3gen-compile-cache-dir $CACHE \
        --warmup-s 8 --window-s 8 --windows 2 $([[ -n ${TTFA:-} ]] || echo --no-ttfa) \
        >"$OUT/perf28-engine.log" 2>&1
      grep "^t3 alone\|^s3gen alone\|^engine\|Traceback\|Error" "$OUT/perf28-engine.log" | tail -12
    fi
    cp $PARTS/s3gen.json $PARTS/engine.json "$OUT/parts/" 2>/dev/null
    python -m tools.gpu.gpu_serving report --parts $PARTS --out "$OUT/gpu-serving-h200.json" \
      --previous benchmarks/results/gpu-serving-h200.json >/dev/null
    python -m tools.gpu.gpu_serving summary --out "$OUT/gpu-serving-h200.json"
    ;;
  s3gen)
    ensure_checkpoint
    timeout 560 python -m tools.gpu.gpu_serving s3gen --checkpoint $CKPT --parts "$OUT/parts" \
      --budget-s ${BUDGET_S:-480} ${S3GEN_VARIANTS:+--variants $S3GEN_VARIANTS} 2>&1 | tail -40
    ;;
  engine15)
    ensure_checkpoint
    timeout 540 python -m tools.gpu.gpu_serving engine --checkpoint $CKPT --parts "$OUT/parts" \
      --s3gen-compile ${S3GEN_COMPILE:-off} 2>&1 | tee "$OUT/engine15.log" | grep -v "^INFO\|^(EngineCore\|^DEBUG" | tail -40
    ;;
  serve15)
    ensure_checkpoint
    export CHATTERBOX_ENGINE=vllm CHATTERBOX_MODEL_DIR=$CKPT VLLM_MAX_BATCH_SIZE=16 VLLM_COMPILE=true \
      CHATTERBOX_BENCH_FORCED_TOKENS=150 CHATTERBOX_GPU_MEMORY_UTILIZATION=0.5 \
      CHATTERBOX_S3GEN_COMPILE=${S3GEN_COMPILE:-off} CHATTERBOX_S3GEN_MAX_WAIT_S=${S3GEN_MAX_WAIT_S:-0}
    gpu_free
    setsid serve run serve_config.yaml >"$OUT/serve.log" 2>&1 &
    for i in $(seq 1 100); do
      sleep 3
      curl -sf localhost:8000/health >/dev/null && break
    done
    curl -s localhost:8000/health | head -c 400; echo
    timeout 300 python -m tools.gpu.gpu_serving serve --parts "$OUT/parts" 2>&1 | tail -12
    serve shutdown -y >/dev/null 2>&1; ray stop --force >/dev/null 2>&1
    grep -i "error\|traceback" "$OUT/serve.log" | head -5
    ;;
esac
