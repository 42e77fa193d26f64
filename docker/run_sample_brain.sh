#!/bin/sh
# The MOOD challenge's call: sh /workspace/run_sample_brain.sh INPUT_FOLDER OUTPUT_FOLDER
exec /workspace/predict.sh sample brain "$1" "$2"
