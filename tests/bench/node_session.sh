#!/bin/bash
# One device session on the 16-core node (shared/node kit), for issues 26 and 23: carry .node,
# then `setsid bash tests/bench/node_session.sh &` and copy /tmp/nodeout back. Runs the suite
# (1 iteration, default size search), node_table --from-suite (the 2x check), then
# cluster_scaling at 4, 1, 2 timing nodes with login cores kept apart, each step only while
# the ~28 min budget allows. Needs about 27 min.
OUTD=/tmp/nodeout; mkdir -p $OUTD
exec >>$OUTD/driver.log 2>&1
T0=$(date +%s)
left() { echo $(( 1700 - ($(date +%s) - T0) )); }
echo "== start $(date -u +%T)"
bash .node/setup.sh || { echo "setup failed"; exit 1; }
echo "== setup done $(date -u +%T)"
nproc; lscpu | grep -E "Model name|Thread|Core|Socket|NUMA|L1d|L2|L3|Flags" | cut -c1-200 > $OUTD/lscpu.txt
( time timeout 660 .venv/bin/hpcagents suite --dir /tmp/suite16 --iterations 1 ) > $OUTD/suite16.log 2>&1
echo "== suite done $(date -u +%T) rc=$? left=$(left)"
cp /tmp/suite16/suite.md $OUTD/ 2>/dev/null
mkdir -p $OUTD/suite16 && (cd /tmp/suite16 && cp --parents results/*/summary.json results/*/bench_size/*.json results/*/iter1/best.json results/*/iter1/final_round.json $OUTD/suite16/ 2>/dev/null)
.venv/bin/python - <<'PY' > $OUTD/pm_prompt.txt 2>&1
import json, pathlib
for p in sorted(pathlib.Path('/tmp/suite16/results/.llm-cache').rglob('*.json')):
    d = json.loads(p.read_text())
    msgs = (d.get('request') or {}).get('messages') or d.get('messages') or []
    text = "\n".join(m.get('content', '') for m in msgs if isinstance(m, dict))
    if 'Kernel: dgemm\nIteration: 1\nStrategies wanted' in text:
        print(p); print(text); break
PY
( time timeout 260 .venv/bin/python tests/bench/node_table.py --from-suite /tmp/suite16 --repeats 3 --out $OUTD/node_table.json ) > $OUTD/node_table.log 2>&1
echo "== node_table done $(date -u +%T) left=$(left)"
for n in 4 1 2; do
  l=$(left); [ "$l" -lt 200 ] && { echo "== skip $n nodes (left $l)"; continue; }
  ( time timeout $((l - 20)) .venv/bin/python tests/bench/cluster_scaling.py --nodes $n --cluster-nodes 4 --no-dry-run --rows $OUTD/rows.jsonl --keep $OUTD/keep ) > $OUTD/cluster-$n.log 2>&1
  echo "== cluster $n done $(date -u +%T) left=$(left)"
done
(sinfo -N; sacct -c -o JobID,JobName%16,NodeList,Start,End,Elapsed,State | tail -30) > $OUTD/slurm_end.txt 2>&1
bash tests/slurm/cluster.sh stop
echo "== end $(date -u +%T)"
