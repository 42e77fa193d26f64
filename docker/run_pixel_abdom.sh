#!/bin/sh
# The MOOD challenge's call: sh /workspace/run_pixel_abdom.sh INPUT_FOLDER OUTPUT_FOLDER
exec /workspace/predict.sh pixel abdom "$1" "$2"
