# raypipe on the official Ray image (the project's Ray and Python versions: pyproject.toml, .python-version).
#   CPU: docker build -t raypipe:0.1.0 .
#   GPU: docker build -t raypipe:0.1.0-gpu --build-arg VARIANT=gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG RAY_VERSION=2.60.0
ARG PYTHON=py311
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON}-${VARIANT}

ARG VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# OpenCL for ppafm: PoCL (a pip wheel) on CPUs; on GPU nodes the NVIDIA driver's OpenCL library, which the
# NVIDIA container runtime mounts ("compute" capability), registered through an ICD file.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER root
RUN mkdir -p /etc/OpenCL/vendors && if [ "$VARIANT" = "gpu" ]; then \
      echo "libnvidia-opencl.so.1" > /etc/OpenCL/vendors/nvidia.icd; fi
USER ray

WORKDIR /home/ray/raypipe
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users raypipe ./raypipe
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" . \
    && python -c "import raypipe, ppafm, ray; assert ray.__version__ == '${RAY_VERSION}'"
