#!/usr/bin/env bash
# The GPU host checks, in one go (a lent GPU machine has minutes, not hours): the throughput rows of
# benchmarks/host_throughput.py on CUDA, then `pipeline run` end to end on CUDA with the default budget, fp32 and bf16
# autocast, scored on the real Fashion-MNIST test split (EVAL, an .npz the pipeline's check stage reads).
#
#   EVAL=fmnist_t10k.npz OUT=gpu-out benchmarks/gpu_check.sh
#
# Writes throughput.md, run-<precision>.json (wall time + the run's report.json) and the logs under $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD ZSQ_QUIET=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi -L
"$PY" -c "import torch, onnx, onnxruntime; print('torch', torch.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, torch.cuda.get_device_name(0))"
timeout 200 "$PY" -m benchmarks.host_throughput --accelerator cuda --with-compile 2>"$OUT/throughput.log" | tee "$OUT/throughput.md"
for prec in fp32 bf16; do
    run=$(mktemp -d)/run-$prec
    t0=$(date +%s.%N)
    timeout 150 "$PY" -m pipeline run --target onnx --accelerator cuda --precision "$prec" --no-bench --eval-data "$EVAL" \
        --out "$run" >"$OUT/run-$prec.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    tail -12 "$OUT/run-$prec.log"
    "$PY" - "$run" "$rc" "$t0" "$t1" "$OUT/run-$prec.json" <<'PY'
import json, sys
from pathlib import Path
run, rc, t0, t1, out = sys.argv[1:]
rep = Path(run) / "report.json"
data = {"rc": int(rc), "wall_s": float(t1) - float(t0), "report": json.loads(rep.read_text()) if rep.exists() else None}
Path(out).write_text(json.dumps(data))
print(f"run {Path(run).name}: rc {rc}, wall {data['wall_s']:.1f} s")
PY
done
