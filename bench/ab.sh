#!/usr/bin/env bash
# Engine benchmark of a git revision against the working tree, run alternately.
#
#   bench/ab.sh REV [ROUNDS] [engine_throughput.py options...]
#   bench/ab.sh HEAD~3 3 --workers 1 --clients 1 4 --seconds 8
#
# The 2-core machines these run on drift by 2x within the hour, so two figures taken
# minutes apart compare nothing; alternating short runs of A (REV) and B (the working
# tree), A first in odd rounds and B first in even ones, puts each pair on the same
# machine state. A runs from a temporary worktree through PYTHONPATH (the venv's
# editable install stays on the working tree).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rev="${1:?usage: bench/ab.sh REV [ROUNDS] [engine_throughput.py options...]}"
rounds="${2:-3}"
shift $(( $# >= 2 ? 2 : 1 ))
python="$here/.venv/bin/python"
tree="$(mktemp -d)/a"
git -C "$here" worktree add --quiet --detach "$tree" "$rev"
trap 'git -C "$here" worktree remove --force "$tree"' EXIT
# the console script imports agent_ledger.infrastructure.cli; a revision from before the
# agent_ledger package gets the same links, so its own code (on PYTHONPATH) is what runs
if [ ! -e "$tree/agent_ledger" ]; then
  mkdir "$tree/agent_ledger"
  touch "$tree/agent_ledger/__init__.py"
  for layer in domain application infrastructure projections; do
    ln -s "../$layer" "$tree/agent_ledger/$layer"
  done
fi
echo "A = $rev ($(git -C "$tree" log -1 --format=%h)), B = working tree of $here"
for round in $(seq "$rounds"); do
  order="A B"
  (( round % 2 == 0 )) && order="B A"  # the second of a pair has measured faster: alternate
  for side in $order; do
    dir="$here"
    [ "$side" = A ] && dir="$tree"
    figures=$(cd "$dir" && PYTHONPATH="$dir" "$python" bench/engine_throughput.py --cpu "$@" 2>&1 \
      | awk '/^ +[0-9]+ +[0-9]+ +[0-9]+ /{printf "%sw/%sc %s/s ", $1, $2, $4} /CPU ms/{printf "(cpu %s ms)  ", $NF}')
    echo "$side  $figures"
  done
done
