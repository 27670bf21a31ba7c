#!/usr/bin/env bash
# The GPU numbers of docs/performance.md, in one call of the device tool (a lent H100/H200):
#   scripts/fetch_device_wheels.sh [--with-bnb]      # here, once
#   device run, carry [".whl"], timeout 600:  bash scripts/device_bench.sh
# Each run writes `flux2 bench --json` to $OUT/NAME.json; progress and errors go to
# $OUT/bench.log (at most 8 files come back). --smoke runs the same plumbing with the
# seconds-long tiny architecture, to try the script on a CPU.
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
fi
smoke=false; [[ "${1:-}" == "--smoke" ]] && smoke=true
log="$OUT/bench.log"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; } > "$log"

run() {
    local name=$1; shift
    $smoke && set -- --arch tiny-arch --size 64 --steps 1 --layers 2 "${@:7}"  # keep the options after --steps N
    echo "== $name: flux2 bench $*" >> "$log"
    timeout 300 python3 -m flux2cli bench --json "$@" > "$OUT/$name.json" 2>> "$log"
    echo "== $name: exit $?" >> "$log"
}
run klein-4b --arch klein-4b --size 1024 --steps 4 --decoder small   # + the small decoder's decode ratio
run klein-4b-compile --arch klein-4b --size 1024 --steps 4 --compile
# Step caching pays on long schedules (TaylorSeer's first 4 steps are full): 28 steps, plain vs cached.
run klein-4b-taylorseer --arch klein-4b --size 1024 --steps 28 --cache taylorseer
run klein-4b-fbc --arch klein-4b --size 1024 --steps 28 --cache fbc
run dev-bf16 --arch dev --size 1024 --steps 4 --dtype bf16
run dev-bf16-taylorseer --arch dev --size 1024 --steps 28 --dtype bf16 --cache taylorseer
if python3 -c "import bitsandbytes" 2>/dev/null; then
    run dev-nf4 --arch dev --size 1024 --steps 4 --quant nf4
fi
cat "$log"
