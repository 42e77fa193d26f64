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

# Started as root (the image's default, as the challenge runs it: no --user, OUT made by the caller):
# run again as OUT's owner, uid and gid, with no capabilities at all and no way to regain any, so the
# outputs belong to whoever owns the folder. Root-owned OUT: uid 0 without capabilities (it cannot
# read or write what its owner bits do not allow). Started with --user: runs as that user unchanged.
if [ "$(id -u)" = 0 ] && [ -z "${MOOD_VQAD_AS_OWNER-}" ] && [ -d "$out" ]; then
    owner=$(stat -c %u "$out") group=$(stat -c %g "$out")
    export MOOD_VQAD_AS_OWNER=$owner
    exec setpriv --reuid="$owner" --regid="$group" --clear-groups --inh-caps=-all --bounding-set=-all \
        --no-new-privs -- /bin/sh "$0" "$@"
fi
shift 4

# The root file system may be read-only: temporary files and every cache go to a folder under OUT,
# removed on exit. Its lock, held while the run lives, tells a later run whether it is stale (the
# package's io.RUN_TMP_PREFIX and io.RUN_TMP_LOCK: a killed run's folder is removed by the next run).
tmp=$(mktemp -d "$out/.mood-vqad-tmp.XXXXXX") || {
    echo "ERROR: $out: output folder is missing or not writable by uid $(id -u)" >&2
    exit 1
}
trap 'rm -rf "$tmp"' EXIT
exec 9>"$tmp/lock"
flock -n 9
export TMPDIR="$tmp" HOME="$tmp" XDG_CACHE_HOME="$tmp/cache" MPLCONFIGDIR="$tmp/matplotlib" \
    TORCH_HOME="$tmp/torch" NUMBA_CACHE_DIR="$tmp/numba" PYTHONDONTWRITEBYTECODE=1

# progress bars only on a terminal (docker run -t), not in logs
quiet=--no-progress
[ -t 2 ] && quiet=
# This shell is PID 1 (docker stop signals it) and must remove $tmp afterwards, so it cannot exec: the
# predictor runs in the background and a stop signal is passed on as SIGTERM (a background job of sh
# ignores SIGINT). The predictor abandons its case, removes its temporary file and exits 128 + signal.
mood-vqad $quiet predict "$task" "$in" "$out" --region "$region" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # wait was cut short by a signal: wait for the predictor's own exit
    status=0
    wait "$child" || status=$?
done
[ "$status" = 0 ] && exit 0
[ "$status" -gt 128 ] && exit "$status"
# Some cases failed (one ERROR line each): fine only if every case without an output is unreadable.
python /workspace/check_outputs.py "$task" "$in" "$out"
