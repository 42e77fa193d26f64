# The MOOD submission image: the package, its weights baked in, the challenge's four run scripts in
# /workspace and a short-form entrypoint (`IMAGE sample|pixel`). Runs offline, with a read-only root file
# system, and as the output folder's owner without capabilities (docker/predict.sh; README, Docker image).
# The default base is a CUDA PyTorch runtime whose torch is kept as it is; a base without torch (CI's
# offline Debian stand-in) takes it from a wheel put into docker/wheels/.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

# Stage 1: a virtual environment on top of the base's own packages (only the environment is kept). Torch
# comes from the base, else from the wheel; nothing below replaces it (the lock file leaves torch out).
FROM ${BASE_IMAGE} AS build
COPY docker/wheels/ /wheels/
RUN python3 -m venv --system-site-packages /opt/mood-vqad \
    && if ! /opt/mood-vqad/bin/python -c "import torch" 2>/dev/null; then \
        ls /wheels/torch-*.whl >/dev/null 2>&1 || { echo "no torch in the base: put a wheel in docker/wheels/" >&2; exit 1; }; \
        /opt/mood-vqad/bin/pip install --no-cache-dir /wheels/torch-*.whl; fi
# Every dependency but torch from the lock file, hashes checked; then the package alone.
COPY docker/requirements.lock /src/docker/
RUN /opt/mood-vqad/bin/pip install --no-cache-dir --require-hashes -r /src/docker/requirements.lock
COPY pyproject.toml README.md /src/
COPY mood_vqad /src/mood_vqad/
RUN /opt/mood-vqad/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/mood-vqad/bin/python -c "import mood_vqad.cli, nibabel, scipy, SimpleITK, matplotlib, torch"

# Stage 2: the base, the environment, the weights and the scripts.
FROM ${BASE_IMAGE}
# a folder of the build context with brain/ and abdom/ weights folders (CI passes tiny random ones)
ARG WEIGHTS=weights
COPY --from=build /opt/mood-vqad /opt/mood-vqad
COPY ${WEIGHTS}/ /opt/mood-vqad/weights/
COPY docker/entrypoint.sh docker/predict.sh docker/run_*.sh docker/check_outputs.py /workspace/
RUN for region in brain abdom; do \
        test -f /opt/mood-vqad/weights/$region/config.json \
        || { echo "no $region weights in ${WEIGHTS}/$region (see WEIGHTS)" >&2; exit 1; }; done \
    && command -v setpriv >/dev/null && command -v flock >/dev/null \
    && mkdir -p /mnt/data /mnt/pred
ENV PATH=/opt/mood-vqad/bin:$PATH \
    MOOD_VQAD_WEIGHTS=/opt/mood-vqad/weights \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# No USER: the challenge passes no --user and makes the output folder itself; predict.sh drops from root
# to that folder's owner before anything runs. `docker run --user UID` runs as UID throughout.
WORKDIR /workspace
ENTRYPOINT ["/workspace/entrypoint.sh"]
