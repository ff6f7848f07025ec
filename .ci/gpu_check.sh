#!/usr/bin/env bash
# Issue #18 on one GPU, in one go (about 5-7 minutes on one H100/H200; every step has its own timeout):
#   1. tests/test_device.py on CUDA (CPU references, CUDA graphs vs eager, no host sync, fused attention,
#      batch-2 bf16 encode, device composite);
#   2. the streaming-student bench (random seeded weights, 512x512, 81 frames, TAEHV decode, bf16, no
#      teacher, no memory probes) for the 1.3B and 14B presets, each with the switchable fast paths
#      off (--no-fast) and on, in that order;
#   3. a summary (gpu_summary.json + the acceptance lines) from the bench JSON.
# Run from the repository root:  bash .ci/gpu_check.sh      Output folder: $OUT (default docs/bench).
# Exit status: non-zero if any step failed; the later steps run anyway.
set -uo pipefail
OUT="${OUT:-docs/bench}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
failed=0

step() {  # step SECONDS COMMAND...: run with a timeout, log it, remember a failure
    local limit=$1
    shift
    echo "+ $*" | tee -a "$LOG"
    local began=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "= rc $rc after $((SECONDS - began)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || failed=1
}

step 60 "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
step 180 env LIPFORCING_TEST_DEVICE=cuda "$PY" -m pytest -q -rs tests/test_device.py --junitxml="$OUT/test_device.xml"
for preset in 1.3b 14b; do
    step 100 "$PY" -m lipforcing_core bench --preset "$preset" --device cuda --teacher-steps 0 --no-memory --no-fast \
        --out "$OUT/gpu_${preset}_fast_off.json"
    step 100 "$PY" -m lipforcing_core bench --preset "$preset" --device cuda --teacher-steps 0 --no-memory \
        --out "$OUT/gpu_${preset}_fast_on.json"
done
step 30 "$PY" - "$OUT" <<'PYEOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
targets = {"1.3b": (60.0, 0.15), "14b": (25.0, None)}  # FPS end to end, TTFF seconds (issue #18)
rows = []
for preset, (fps_min, ttff_max) in targets.items():
    for mode in ("fast_off", "fast_on"):
        path = out / f"gpu_{preset}_{mode}.json"
        if not path.exists():
            print(f"{path}: missing")
            continue
        r = json.loads(path.read_text())
        row = {k: r[k] for k in ("device", "machine", "preset", "student_fps", "ttff_s", "steady_chunk_s")}
        row |= {"mode": mode, "stages_s": r["stages_s"]["student"], "fast_paths": r["fast_paths"]}
        rows.append(row)
        ok = r["student_fps"] >= fps_min and (ttff_max is None or r["ttff_s"] <= ttff_max)
        print(f"{preset:5s} {mode:8s} {r['student_fps']:8.2f} FPS  TTFF {r['ttff_s']:.3f} s  "
              f"target >= {fps_min} FPS" + (f", TTFF <= {ttff_max} s" if ttff_max else "")
              + f": {'met' if ok else 'NOT met'}  stages {r['stages_s']['student']}")
(out / "gpu_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
PYEOF
echo "gpu_check: $([ $failed -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED), outputs in $OUT" | tee -a "$LOG"
exit $failed
