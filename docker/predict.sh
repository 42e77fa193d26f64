#!/bin/sh
# predict.sh TASK REGION IN OUT [mood-vqad predict options]: the run_*.sh scripts and the short form.
# Exit 0 when every readable case of IN has its output in OUT: an unreadable case is logged (ERROR line)
# and skipped, since the challenge stops at a non-zero exit. Anything else that fails exits non-zero.
set -u
if [ $# -lt 4 ] || [ -z "$3" ] || [ -z "$4" ]; then
    echo "usage: predict.sh sample|pixel auto|brain|abdom INPUT_FOLDER OUTPUT_FOLDER [options]" >&2
    exit 2
fi
task=$1 region=$2 in=$3 out=$4
shift 4

# The root file system may be read-only: temporary files and every cache go to a folder under OUT,
# removed on exit.
tmp=$(mktemp -d "$out/.mood-vqad-tmp.XXXXXX") || {
    echo "ERROR: $out: output folder is missing or not writable by uid $(id -u)" >&2
    exit 1
}
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export TMPDIR="$tmp" HOME="$tmp" XDG_CACHE_HOME="$tmp/cache" MPLCONFIGDIR="$tmp/matplotlib" \
    TORCH_HOME="$tmp/torch" NUMBA_CACHE_DIR="$tmp/numba" PYTHONDONTWRITEBYTECODE=1

# progress bars only on a terminal (docker run -t), not in logs
quiet=--no-progress
[ -t 2 ] && quiet=
mood-vqad $quiet predict "$task" "$in" "$out" --region "$region" "$@" && exit 0
# Some cases failed (one ERROR line each): fine only if every case without an output is unreadable.
python /workspace/check_outputs.py "$task" "$in" "$out"
