#!/bin/sh
# Short form: `docker run -v IN:/mnt/data -v OUT:/mnt/pred IMAGE sample|pixel [PREDICT OPTIONS]`, the
# region worked out per case. Anything else runs as a command, e.g. the challenge's
# `IMAGE sh /workspace/run_pixel_brain.sh /mnt/data /mnt/pred`.
case "${1-}" in
sample | pixel)
    task=$1
    shift
    exec /workspace/predict.sh "$task" auto /mnt/data /mnt/pred "$@"
    ;;
"")
    echo "usage: IMAGE sample|pixel [mood-vqad predict options], with -v IN:/mnt/data -v OUT:/mnt/pred" >&2
    echo "   or: IMAGE sh /workspace/run_{sample,pixel}_{brain,abdom}.sh IN OUT" >&2
    exit 2
    ;;
*) exec "$@" ;;
esac
