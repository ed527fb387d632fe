# syntax=docker/dockerfile:1
#
# deltaserve image. Two variants from one file:
#
#   docker build -t ghcr.io/deltaserve/deltaserve:latest .                                  # CPU (default)
#   docker build --build-arg VARIANT=cuda -t ghcr.io/deltaserve/deltaserve:latest-cuda .   # CUDA 12 + cuDNN 9
#
# The CUDA variant downloads onnxruntime-node's CUDA execution provider at install time (linux/amd64
# only) and runs with DELTASERVE_DEVICE=cuda; run it with a GPU (`docker run --gpus all`, or
# `nvidia.com/gpu` in Kubernetes).
#
# Run: docker run -p 8000:8000 -e DELTASERVE_HOST=0.0.0.0 -v $PWD/deploy/auth.example.json:/etc/deltaserve/auth.json:ro \
#        -e DELTASERVE_AUTH=/etc/deltaserve/auth.json ghcr.io/deltaserve/deltaserve:latest
# (without an auth file the server binds loopback only, so it is reachable only from inside the container).
#
# Shutdown: `docker stop` sends SIGTERM (STOPSIGNAL below) straight to node (exec-form ENTRYPOINT, no
# shell in between). The server then answers 503 on /health/ready, lets in-flight streams finish for
# up to DELTASERVE_SHUTDOWN_GRACE_MS (default 30000) and checkpoints a running training job; give the
# container more than that before SIGKILL (`docker stop -t 40`, compose `stop_grace_period`,
# Kubernetes `terminationGracePeriodSeconds`).

ARG NODE_IMAGE=node:22-bookworm-slim
# CUDA 12 + cuDNN 9 runtime: what onnxruntime-node's CUDA 12 execution provider links against.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
# cpu | cuda
ARG VARIANT=cpu

# ---------------------------------------------------------------------------------------------
# Dependencies. Only the stages the selected variant needs are built (BuildKit skips the rest).

# The node binary for the CUDA runtime, which has no Node of its own.
FROM ${NODE_IMAGE} AS node

FROM ${NODE_IMAGE} AS deps-cpu
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# Production dependencies only (the image runs the compiled JavaScript; no tsx, no TypeScript).
# onnxruntime-node ships its CPU/WebGPU binaries in the package; .npmrc skips its download step.
RUN npm ci --omit=dev --no-audit --no-fund

# The compiled JavaScript (dist/): a start then pays no transpilation.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS deps-cuda
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# .npmrc sets onnxruntime-node-install=skip, which npm passes to install scripts as
# npm_config_onnxruntime_node_install; onnxruntime-node's script/install.js reads
# ONNXRUNTIME_NODE_INSTALL first, so this wins and the CUDA 12 provider libraries are downloaded
# (from NuGet) into node_modules/onnxruntime-node/bin/napi-v6/linux/x64/.
ENV ONNXRUNTIME_NODE_INSTALL=cuda12 \
    npm_config_onnxruntime_node_install=cuda12
RUN npm ci --omit=dev --no-audit --no-fund \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

# The selected variant's node_modules.
FROM deps-${VARIANT} AS deps

# ---------------------------------------------------------------------------------------------
# Runtime bases.

FROM ${NODE_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-cuda
COPY --from=node /usr/local/bin/node /usr/local/bin/node
ENV DELTASERVE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---------------------------------------------------------------------------------------------
# The image.

FROM base-${VARIANT} AS runtime
ENV NODE_ENV=production \
    DELTASERVE_CACHE_DIR=/var/cache/deltaserve \
    DELTASERVE_DATA_DIR=/var/lib/deltaserve \
    DELTASERVE_PORT=8000 \
    DELTASERVE_SHUTDOWN_GRACE_MS=30000
WORKDIR /app
RUN groupadd --system --gid 10001 deltaserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin deltaserve \
 && mkdir -p /var/cache/deltaserve /var/lib/deltaserve \
 && chown deltaserve:deltaserve /var/cache/deltaserve /var/lib/deltaserve
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY --from=build /app/dist ./dist
# The default model (models/deltaserve-kjv, F16): served when neither --model nor DELTASERVE_MODEL is given.
COPY models ./models
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.DELTASERVE_PORT||8000)+'/health/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
