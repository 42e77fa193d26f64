#!/bin/sh
# The MOOD challenge's call: sh /workspace/run_pixel_brain.sh INPUT_FOLDER OUTPUT_FOLDER
exec /workspace/predict.sh pixel brain "$1" "$2"
