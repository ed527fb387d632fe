# syntax=docker/dockerfile:1
# CPU image by default. Build: docker build -t deltaserve .
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# Production dependencies only; onnxruntime-node ships its CPU/WebGPU binaries in the package.
RUN npm ci --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    DELTASERVE_CACHE_DIR=/var/cache/deltaserve \
    DELTASERVE_PORT=8000
WORKDIR /app
RUN useradd --system --uid 10001 --home-dir /app deltaserve \
 && mkdir -p /var/cache/deltaserve && chown deltaserve /var/cache/deltaserve
COPY --from=deps /app/node_modules ./node_modules
COPY package.json .npmrc ./
COPY bin ./bin
COPY src ./src
USER deltaserve
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.DELTASERVE_PORT||8000)+'/health/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "bin/deltaserve.mjs"]
