#!/bin/sh
# The MOOD challenge's call: sh /workspace/run_sample_abdom.sh INPUT_FOLDER OUTPUT_FOLDER
exec /workspace/predict.sh sample abdom "$1" "$2"
