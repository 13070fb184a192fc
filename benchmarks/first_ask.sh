#!/usr/bin/env bash
# Cold time of the first `reasonrag ask` after a fresh install, and its peak memory.
#   bash benchmarks/first_ask.sh [QUESTION]
# Makes a fresh virtual environment, installs as the README says, then times two `ask` runs in new
# processes (the first one cold: nothing cached, page cache aside) with /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/.."
question=${1:-"What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?"}
work=$(mktemp -d)
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
export REASONRAG_CACHE="$work/cache" HF_HUB_OFFLINE=1
t0=$(date +%s)
pip install --quiet --upgrade pip
pip install --quiet torch==2.13.0
pip install --quiet .
echo "install: $(( $(date +%s) - t0 ))s"
cd "$work"  # run outside the checkout: the installed package, not the source tree
for run in first second; do
  /usr/bin/time -v reasonrag ask "$question" --json >"$work/$run.json" 2>"$work/$run.time" || {
    cat "$work/$run.time"; exit 1; }
  wall=$(grep "Elapsed (wall clock)" "$work/$run.time" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$work/$run.time" | awk '{print $NF}')
  answer=$(python -c "import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])['answer'])" "$work/$run.json")
  echo "$run ask: wall $wall, peak RSS $((rss / 1024)) MB, answer: $answer"
done
rm -rf "$work"
