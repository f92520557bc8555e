#!/usr/bin/env bash
# Every GPU figure of issue 12 in one command, one JSON line per figure, within a wall-time budget.
#
#   bash benchmarks/gpu_suite.sh                        # GPU (one H100/H200): the default figures, <= 465 s
#   bash benchmarks/gpu_suite.sh recipe train_gpt2_large   # only these figures, in this order
#   LMFORGE_SUITE=cpu bash benchmarks/gpu_suite.sh      # the dry run: tiny presets on CPU, every code path
#
# Figures (their GPU default order, by priority, is DEFAULT_FIGURES below; a name is train_<preset>, train_<preset>_scan,
# train_<preset>_flash, train_<preset>_onechunk, train_<preset>_docmask, decode_<preset>, checks_decode_<preset>, remat_<preset>, init_<preset>,
# xla_decode_<preset>, xla_train_<preset> or recipe):
#   train_gpt2_small       lmforge vs PyTorch train step, bf16, batch 16 x seq 1024 (compare.py train)
#   train_llama_1b         the same for Llama 3.2 1B's shape, batch 16 x seq 1024 (SUITE_LLAMA_BATCH/SEQ)
#   decode_llama_1b        decode at batch 1/8/64: lmforge vs transformers static cache vs the floor (decode.py)
#   checks_decode_llama_1b lmforge's decode at batch 1 (SUITE_CHECKS_DECODE_BATCHES) per number of steps between the
#                          loop's checks of "has every row stopped?" (SUITE_CHECKS_DECODE_EVERY, default 8,1,32;
#                          each check is a host round trip on a GPU), one process
#   train_gpt2_medium      350M, batch 16 x seq 1024
#   recipe                 nanoGPT's shakespeare_char: lmforge run ...:gpu vs nanogpt_reference.py --recipe gpu,
#                          SUITE_RECIPE_STEPS iterations for both (default 1000; "full" = the recipe's 5000)
#   train_gpt2_large       774M, batch 16 x seq 1024
#   train_gpt2_small_scan  lmforge with --scan-layers, against the PyTorch number of train_gpt2_small
#   train_gpt2_small_flash lmforge with --attention flash (Pallas/Triton flash attention: segment ids and
#                          causality in the kernel) instead of cudnn, against the same PyTorch number
#   remat_gpt2_medium      benchmarks/remat.py: compiled temporaries and step ms per remat policy (none, full,
#                          save_dot_except_mlp, minimal), batch 8 x seq 1024 (SUITE_REMAT_POLICIES)
#   xla_decode_llama_1b    decode_llama_1b's lmforge side at batch 1 (SUITE_XLA_DECODE_BATCHES) once per XLA_FLAGS
#                          variant (SUITE_XLA_DECODE_VARIANTS, ';'-separated; the first, "", is the baseline)
#   init_llama_1b          benchmarks/init_compile.py: the parameter init with jax's CUDA threefry kernel (lmforge's
#                          default on one GPU) and with the unrolled lowering: wall and compile seconds, same bits
#   train_gpt2_small_docmask lmforge with --document-mask: the batch's segment ids reach attention (packed data's
#                          document mask: cuDNN gets a dense mask as a bias) instead of is_causal alone
#   train_llama_1b_onechunk  lmforge with --vocab-chunk 0: the loss computes the whole (B, T, V) logits once
#                          instead of chunks of 16,384 columns recomputed in the backward pass
#   xla_train_llama_1b     train_llama_1b's lmforge side once per variant of SUITE_XLA_TRAIN_VARIANTS
#
# Each figure runs under its own `timeout`, only if at least its minimum time is left of the budget
# (SUITE_BUDGET_S, default 465 s on GPU), and never past the budget; one that does not fit prints
# {"figure": ..., "skipped": ...}. Lines go to stdout and, when $OUT is set, to $OUT/gpu_suite.jsonl;
# each figure's stderr to $OUT/gpu_suite_logs/<figure>.log (else /tmp/gpu_suite_logs).
#
# Environment: LMFORGE_SUITE=gpu|cpu, SUITE_BUDGET_S, SUITE_DATA (default .gpudata/tinyshakespeare.txt,
# on CPU also ../shared/data/tinyshakespeare.txt), SUITE_RECIPE_STEPS, SUITE_STEPS / SUITE_WARMUP
# (timed / untimed train steps: 10 / 3), SUITE_BATCH / SUITE_SEQ (GPT-2: 16 / 1024),
# SUITE_LLAMA_BATCH / SUITE_LLAMA_SEQ (16 / 1024), SUITE_DECODE_BATCHES (1,8,64),
# SUITE_DECODE_HF_BATCHES (1,8,64), SUITE_DECODE_NEW_TOKENS (128), SUITE_DECODE_SIDE (both; lmforge
# or transformers: one side only), SUITE_TORCH_COMPILE (1 on GPU, 0 on CPU), SUITE_REMAT_POLICIES,
# SUITE_XLA_DECODE_VARIANTS / SUITE_XLA_TRAIN_VARIANTS / SUITE_XLA_DECODE_BATCHES (the xla_ figures),
# SUITE_CHECKS_DECODE_EVERY / SUITE_CHECKS_DECODE_BATCHES (the checks_decode_ figure), SUITE_PROFILE (1: each
# train side traces 2 more steps and decode one more call per batch under its profiler, untimed:
# device busy/idle ms and time per kernel category, benchmarks/device_profile.py; 0: off),
# SUITE_TORCH_FROM (a gpu_suite.jsonl of an earlier run: a train_<preset> figure whose PyTorch side
# is in it runs lmforge only, against that line, and says so in "torch_reused_from"),
# SUITE_SKIP_INSTALL=1, SUITE_COMMIT (recorded in the first line), PYTHON (python3).
#
# Setup: wheels in .whl/ (grain, array-record, portpicker, tensorboardX) are installed with
# --no-deps into /tmp/site when `import grain, tensorboardX` fails; lmforge is imported from this
# tree through /tmp/lmforge_path.*/lmforge/<pkg> -> <repo>/<pkg> symlinks on PYTHONPATH (there is
# no lmforge/ folder: setup.py maps lmforge.<pkg> to <pkg>/), so nothing is pip-installed.

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
MODE=${LMFORGE_SUITE:-gpu}
START=$(date +%s)

if [[ $MODE == gpu ]]; then
  BUDGET=${SUITE_BUDGET_S:-465}
  DEFAULT_FIGURES="train_gpt2_small train_llama_1b decode_llama_1b train_gpt2_medium checks_decode_llama_1b train_llama_1b_onechunk xla_decode_llama_1b init_llama_1b recipe train_gpt2_large train_gpt2_small_scan train_gpt2_small_flash train_gpt2_small_docmask remat_gpt2_medium xla_train_llama_1b"
  STEPS=${SUITE_STEPS:-10}; WARMUP=${SUITE_WARMUP:-3}
  BATCH=${SUITE_BATCH:-16}; SEQ=${SUITE_SEQ:-1024}
  LLAMA_BATCH=${SUITE_LLAMA_BATCH:-16}; LLAMA_SEQ=${SUITE_LLAMA_SEQ:-1024}
  DECODE_BATCHES=${SUITE_DECODE_BATCHES:-1,8,64}; DECODE_HF_BATCHES=${SUITE_DECODE_HF_BATCHES:-1,8,64}
  DECODE_NEW=${SUITE_DECODE_NEW_TOKENS:-128}
  RECIPE_STEPS=${SUITE_RECIPE_STEPS:-1000}; RECIPE_VARIANT=gpu; RECIPE_EVAL=""
  TORCH_COMPILE=${SUITE_TORCH_COMPILE:-1}
  LM_TRAIN_ARGS="--dtype bfloat16 --attention cudnn"
  PROFILE=${SUITE_PROFILE:-1}
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}   # one process at a time
elif [[ $MODE == cpu ]]; then
  BUDGET=${SUITE_BUDGET_S:-1500}
  DEFAULT_FIGURES="train_gpt2_tiny train_llama_tiny decode_llama_tiny checks_decode_llama_tiny recipe train_gpt2_tiny_scan remat_llama_tiny init_llama_tiny xla_decode_llama_tiny"
  STEPS=${SUITE_STEPS:-5}; WARMUP=${SUITE_WARMUP:-2}
  BATCH=${SUITE_BATCH:-8}; SEQ=${SUITE_SEQ:-128}
  LLAMA_BATCH=${SUITE_LLAMA_BATCH:-8}; LLAMA_SEQ=${SUITE_LLAMA_SEQ:-128}
  DECODE_BATCHES=${SUITE_DECODE_BATCHES:-1,4}; DECODE_HF_BATCHES=${SUITE_DECODE_HF_BATCHES:-1,4}
  DECODE_NEW=${SUITE_DECODE_NEW_TOKENS:-16}
  RECIPE_STEPS=${SUITE_RECIPE_STEPS:-120}; RECIPE_VARIANT=cpu; RECIPE_EVAL=60
  TORCH_COMPILE=${SUITE_TORCH_COMPILE:-0}
  LM_TRAIN_ARGS=""
  PROFILE=${SUITE_PROFILE:-1}
else
  echo "gpu_suite.sh: LMFORGE_SUITE=$MODE; expected gpu or cpu" >&2
  exit 2
fi
FIGURES=${*:-${SUITE_FIGURES:-$DEFAULT_FIGURES}}
# XLA flag variants of the xla_ figures, ';'-separated, "" = none (the baseline, measured in the same run).
# Command buffers (CUDA graphs) with WHILE and CONDITIONAL keep the decode loop's predicate on the
# device (XLA:GPU otherwise reads a while's and a cond's predicate back to the host every step).
CB="FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN"
XLA_DECODE_VARIANTS=${SUITE_XLA_DECODE_VARIANTS-";--xla_gpu_enable_command_buffer=$CB,WHILE,CONDITIONAL;--xla_gpu_enable_command_buffer=;--xla_gpu_enable_triton_gemm=false"}
XLA_TRAIN_VARIANTS=${SUITE_XLA_TRAIN_VARIANTS-";--xla_gpu_enable_triton_gemm=false;--xla_gpu_enable_latency_hiding_scheduler=true;--xla_gpu_enable_command_buffer="}
if [[ $MODE == cpu ]]; then   # the dry run checks the mechanism with flags XLA:CPU reads
  XLA_DECODE_VARIANTS=${SUITE_XLA_DECODE_VARIANTS-";--xla_cpu_use_thunk_runtime=false"}
  XLA_TRAIN_VARIANTS=${SUITE_XLA_TRAIN_VARIANTS-";--xla_cpu_use_thunk_runtime=false"}
fi
XLA_DECODE_BATCHES=${SUITE_XLA_DECODE_BATCHES:-1}
CHECKS_DECODE_EVERY=${SUITE_CHECKS_DECODE_EVERY:-8,1,32}; CHECKS_DECODE_BATCHES=${SUITE_CHECKS_DECODE_BATCHES:-1}
REMAT_POLICIES=${SUITE_REMAT_POLICIES:-none,full,save_dot_except_mlp,minimal}

OUT_JSONL=""
LOGDIR=/tmp/gpu_suite_logs
if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT"
  OUT_JSONL=$OUT/gpu_suite.jsonl
  LOGDIR=$OUT/gpu_suite_logs
fi
mkdir -p "$LOGDIR"
STATE=$(mktemp -d /tmp/gpu_suite_state.XXXXXX)    # each figure's lines, for later figures to reuse

emit() {   # one JSON line to stdout and the jsonl file
  printf '%s\n' "$1"
  if [[ -n $OUT_JSONL ]]; then printf '%s\n' "$1" >>"$OUT_JSONL"; fi
}

suite_json() {   # suite_json KEY=VALUE ...  -> a JSON object (values: JSON if they parse, else strings;
                 # commit and date stay strings: a hash such as 3e57810 parses as a float)
  "$PY" - "$@" <<'EOF'
import json, sys
out = {}
for kv in sys.argv[1:]:
    key, _, value = kv.partition("=")
    if key.endswith("@file"):        # KEY@file=PATH: the last 1500 characters of a file
        key = key[:-5]
        try:
            value = open(value, errors="replace").read()[-1500:]
        except OSError:
            value = ""
        out[key] = value
        continue
    try:
        out[key] = value if key in ("commit", "date") else json.loads(value)
    except ValueError:
        out[key] = value
print(json.dumps(out))
EOF
}

annotate() {   # annotate LINE FIGURE WALL RC -> LINE with "suite": {...} added (and the XLA_FLAGS of an xla_ figure)
  "$PY" -c 'import json, sys
line = json.loads(sys.argv[1])
line["suite"] = {"figure": sys.argv[2], "wall_s": int(sys.argv[3]), "rc": int(sys.argv[4])}
if sys.argv[5] != "-":
    line["suite"]["xla_flags"] = sys.argv[5]
print(json.dumps(line))' "$1" "$2" "$3" "$4" "${FIGURE_XLA_FLAGS--}" 2>/dev/null || printf '%s\n' "$1"
}

# ------------------------------------------------------------------------------------------ setup
if [[ ${SUITE_SKIP_INSTALL:-0} != 1 ]] && ! "$PY" -c "import grain, tensorboardX" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      >"$LOGDIR/install.log" 2>&1 || echo "gpu_suite.sh: installing .whl/*.whl failed, see $LOGDIR/install.log" >&2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu_suite.sh: grain/tensorboardX missing and no wheels in .whl/" >&2
  fi
fi
LMPATH=$(mktemp -d /tmp/lmforge_path.XXXXXX)
mkdir "$LMPATH/lmforge"
for d in "$ROOT"/*/; do
  d=${d%/}
  if [[ -f $d/__init__.py ]]; then ln -s "$d" "$LMPATH/lmforge/$(basename "$d")"; fi
done
export PYTHONPATH=$LMPATH${PYTHONPATH:+:$PYTHONPATH}

DATA=${SUITE_DATA:-$ROOT/.gpudata/tinyshakespeare.txt}
if [[ ! -f $DATA && -z ${SUITE_DATA:-} && -f $ROOT/../shared/data/tinyshakespeare.txt ]]; then
  DATA=$ROOT/../shared/data/tinyshakespeare.txt
fi

ENV_JSON=$("$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m, json, platform
v = {}
for p in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "triton", "grain", "tensorboardX", "numpy"):
    try:
        v[p] = m.version(p)
    except m.PackageNotFoundError:
        v[p] = None
out = {"python": platform.python_version(), "versions": v}
try:
    import lmforge.model, lmforge.train.step  # noqa: F401  (imports only; no device is touched)
    out["lmforge_import"] = "ok"
except Exception as e:  # reported, and each figure will say what failed
    out["lmforge_import"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
EOF
)
GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
COMMIT=${SUITE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
DIRTY=$( (git status --porcelain 2>/dev/null | grep -q .) && echo true || echo false)
emit "$(suite_json figure=suite/env mode="$MODE" date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" commit="$COMMIT" \
  tree_dirty="$DIRTY" gpu="${GPU_NAME:-none}" budget_s="$BUDGET" figures="$(printf '%s\n' $FIGURES | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')" \
  env="${ENV_JSON:-null}" data="$DATA" data_found="$([[ -f $DATA ]] && echo true || echo false)")"

# ---------------------------------------------------------------------------------------- figures
run_figure() {   # run_figure NAME MIN_S MAX_S CMD... : CMD gets --timeout-s (its own budget) appended
  local name=$1 min=$2 max=$3
  shift 3
  local left=$((BUDGET - ($(date +%s) - START)))
  if ((left < min)); then
    emit "$(suite_json figure="$name" skipped="needs at least ${min} s, ${left} s left of the ${BUDGET} s budget")"
    return
  fi
  local t=$((left < max ? left : max))
  local t0 rc n=0 line
  t0=$(date +%s)
  echo "gpu_suite.sh: $name (up to ${t} s; ${left} s left)" >&2
  timeout -k 5 "$t" "$@" --timeout-s $((t - 8)) >"$STATE/$name.out" 2>"$LOGDIR/$name.log"
  rc=$?
  while IFS= read -r line; do
    if [[ $line == \{* ]]; then
      emit "$(annotate "$line" "$name" $(($(date +%s) - t0)) "$rc")"
      n=$((n + 1))
    fi
  done <"$STATE/$name.out"
  if ((n == 0)); then
    emit "$(suite_json figure="$name" error="exit status $rc (124/137: the suite's timeout of ${t} s)" \
      wall_s=$(($(date +%s) - t0)) xla_flags="${FIGURE_XLA_FLAGS-}" stderr_tail@file="$LOGDIR/$name.log")"
  fi
}

train_batch() {   # batch and sequence of a preset
  case $1 in
    llama_*) echo "$LLAMA_BATCH $LLAMA_SEQ" ;;
    *) echo "$BATCH $SEQ" ;;
  esac
}

limits() {   # minimum and maximum seconds of a figure on this MODE
  if [[ $MODE == cpu ]]; then
    case $1 in
      recipe) echo "60 700" ;;
      decode_*) echo "40 300" ;;
      *_scan|*_flash|*_onechunk|*_docmask) echo "20 150" ;;
      remat_*) echo "30 200" ;;
      init_*) echo "15 120" ;;
      xla_*|checks_*) echo "20 150" ;;
      *) echo "30 250" ;;
    esac
    return
  fi
  case $1 in
    train_gpt2_small) echo "60 170" ;;
    train_gpt2_medium) echo "80 200" ;;
    train_gpt2_large) echo "100 240" ;;
    train_llama_1b) echo "100 240" ;;
    train_*_scan|train_*_flash|train_*_docmask) echo "40 100" ;;
    train_*_onechunk) echo "60 150" ;;
    train_*) echo "80 240" ;;
    decode_*) echo "90 220" ;;
    remat_*) echo "120 240" ;;
    init_*) echo "40 200" ;;
    xla_decode_*) echo "30 90" ;;
    checks_decode_*) echo "40 120" ;;
    xla_train_*) echo "50 120" ;;
    recipe) if [[ $RECIPE_STEPS == full || $RECIPE_STEPS -ge 3000 ]]; then echo "200 420"; else echo "90 200"; fi ;;
    *) echo "60 200" ;;
  esac
}

TORCH_ARGS=""
if [[ $TORCH_COMPILE != 1 ]]; then TORCH_ARGS="--no-compile"; fi
DECODE_PROFILE=()
if [[ $PROFILE == 1 ]]; then   # 2 more steps per train side under its profiler; one more decode call per batch
  LM_TRAIN_ARGS="$LM_TRAIN_ARGS --profile-steps 2"
  TORCH_ARGS="$TORCH_ARGS --profile-steps 2"
  DECODE_PROFILE=(--profile)
fi

earlier_torch() {   # earlier_torch PRESET -> a file with train/PRESET's line of SUITE_TORCH_FROM, if it has a PyTorch side
  [[ -n ${SUITE_TORCH_FROM:-} && -f ${SUITE_TORCH_FROM:-} ]] || return 0
  "$PY" - "$SUITE_TORCH_FROM" "train/$1" "$STATE/earlier_torch_$1.json" <<'EOF'
import json, sys
src, figure, dst = sys.argv[1:]
for line in open(src):
    try:
        obj = json.loads(line)
    except ValueError:
        continue
    if obj.get("figure") == figure and (obj.get("tokens_per_s") or {}).get("torch"):
        open(dst, "w").write(json.dumps(obj) + "\n")
        print(dst)
        break
EOF
}

for fig in $FIGURES; do
  read -r min max <<<"$(limits "$fig")"
  case $fig in
    xla_*)   # one lmforge run per XLA_FLAGS variant; limits are per variant
      inner=${fig#xla_}
      if [[ $inner == decode_* ]]; then variants=$XLA_DECODE_VARIANTS; else variants=$XLA_TRAIN_VARIANTS; fi
      IFS=';' read -r -a flag_list <<<"$variants"
      if [[ $variants == *";" ]]; then flag_list+=(""); fi
      i=0
      for flags in "${flag_list[@]}"; do
        export FIGURE_XLA_FLAGS=$flags
        if [[ $inner == decode_* ]]; then
          run_figure "$fig.$i" "$min" "$max" env XLA_FLAGS="$flags" "$PY" benchmarks/decode.py "${inner#decode_}" \
            --batch-sizes "$XLA_DECODE_BATCHES" --new-tokens "$DECODE_NEW" --side lmforge
        else
          preset=${inner#train_}
          read -r b s <<<"$(train_batch "$preset")"
          run_figure "$fig.$i" "$min" "$max" env XLA_FLAGS="$flags" "$PY" benchmarks/compare.py train "$preset" \
            --figure "train/${preset}_xla$i" --batch-size "$b" --seq-len "$s" --steps "$STEPS" --warmup "$WARMUP" \
            --sides lmforge --lmforge-args="$LM_TRAIN_ARGS" --torch-result "$STATE/train_$preset.out"
        fi
        unset FIGURE_XLA_FLAGS
        i=$((i + 1))
      done
      ;;
    train_*_scan|train_*_flash|train_*_onechunk|train_*_docmask)   # lmforge only, against train_<preset>'s PyTorch line
      variant=${fig##*_}; preset=${fig#train_}; preset=${preset%_"$variant"}
      read -r b s <<<"$(train_batch "$preset")"
      case $variant in
        scan) args="$LM_TRAIN_ARGS --scan-layers" ;;
        onechunk) args="$LM_TRAIN_ARGS --vocab-chunk 0" ;;
        docmask) args="$LM_TRAIN_ARGS --document-mask" ;;
        *) args="${LM_TRAIN_ARGS/--attention cudnn/} --attention flash" ;;
      esac
      run_figure "$fig" "$min" "$max" "$PY" benchmarks/compare.py train "$preset" --figure "train/${preset}_$variant" \
        --batch-size "$b" --seq-len "$s" --steps "$STEPS" --warmup "$WARMUP" --sides lmforge \
        --lmforge-args="$args" --torch-result "$STATE/train_$preset.out"
      ;;
    train_*)
      preset=${fig#train_}
      read -r b s <<<"$(train_batch "$preset")"
      sides=(--first-share 0.6 --torch-args="$TORCH_ARGS")
      earlier=$(earlier_torch "$preset")
      if [[ -n $earlier ]]; then   # lmforge only, against the PyTorch side of SUITE_TORCH_FROM's run
        cp "$earlier" "$STATE/train_$preset.out"
        sides=(--sides lmforge --torch-result "$earlier" --torch-reused-from "$SUITE_TORCH_FROM")
      fi
      run_figure "$fig" "$min" "$max" "$PY" benchmarks/compare.py train "$preset" \
        --batch-size "$b" --seq-len "$s" --steps "$STEPS" --warmup "$WARMUP" --lmforge-args="$LM_TRAIN_ARGS" "${sides[@]}"
      ;;
    decode_*)
      preset=${fig#decode_}
      run_figure "$fig" "$min" "$max" "$PY" benchmarks/decode.py "$preset" --batch-sizes "$DECODE_BATCHES" \
        --hf-batch-sizes "$DECODE_HF_BATCHES" --new-tokens "$DECODE_NEW" --first-share 0.45 \
        --side "${SUITE_DECODE_SIDE:-both}" ${DECODE_PROFILE[@]+"${DECODE_PROFILE[@]}"}
      ;;
    checks_decode_*)   # lmforge only: one run per number of steps between the decode loop's stop checks
      run_figure "$fig" "$min" "$max" "$PY" benchmarks/decode.py "${fig#checks_decode_}" --side lmforge \
        --batch-sizes "$CHECKS_DECODE_BATCHES" --check-every "$CHECKS_DECODE_EVERY" --new-tokens "$DECODE_NEW" \
        ${DECODE_PROFILE[@]+"${DECODE_PROFILE[@]}"}
      ;;
    remat_*)
      preset=${fig#remat_}
      read -r b s <<<"$(train_batch "$preset")"
      remat_args=(--batch-size $((b / 2 > 0 ? b / 2 : 1)) --seq-len "$s" --steps 5 --policies "$REMAT_POLICIES")
      if [[ $MODE == gpu ]]; then remat_args+=(--dtype bfloat16 --attention cudnn); fi
      run_figure "$fig" "$min" "$max" "$PY" benchmarks/remat.py --preset "$preset" "${remat_args[@]}"
      ;;
    init_*)
      run_figure "$fig" "$min" "$max" "$PY" benchmarks/init_compile.py "${fig#init_}"
      ;;
    recipe)
      if [[ ! -f $DATA ]]; then
        emit "$(suite_json figure=recipe error="no data file $DATA: copy tinyshakespeare.txt to .gpudata/ (carry it) or set SUITE_DATA")"
        continue
      fi
      steps_args=()
      if [[ $RECIPE_STEPS != full ]]; then steps_args=(--steps "$RECIPE_STEPS"); fi
      if [[ -n $RECIPE_EVAL ]]; then steps_args+=(--eval-every "$RECIPE_EVAL"); fi
      run_figure recipe "$min" "$max" "$PY" benchmarks/compare.py recipe --data "$DATA" --variant "$RECIPE_VARIANT" \
        ${steps_args[@]+"${steps_args[@]}"}
      ;;
    *)
      emit "$(suite_json figure="$fig" error="unknown figure; expected train_<preset>, train_<preset>_scan, train_<preset>_flash, train_<preset>_onechunk, train_<preset>_docmask, decode_<preset>, checks_decode_<preset>, remat_<preset>, init_<preset>, xla_decode_<preset>, xla_train_<preset> or recipe")"
      ;;
  esac
done

emit "$(suite_json figure=suite/summary wall_s=$(($(date +%s) - START)) budget_s="$BUDGET")"
rm -rf "$STATE" "$LMPATH"
