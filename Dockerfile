# syntax=docker/dockerfile:1
#
# oidc-broker container image.
#
#   docker build -t oidc-broker .
#   docker run -d -p 8080:8080 \
#     -v ./broker.yaml:/etc/oidc-broker/broker.yaml:ro \
#     -v ./policies:/app/policies:ro \
#     -v oidc-broker-data:/app/data \
#     oidc-broker
#
# The mounted broker.yaml must set `server.host: 0.0.0.0` (the default,
# 127.0.0.1, is unreachable from outside the container) and `server.public_url`,
# and should use absolute paths: relative paths resolve against the config
# file's directory (/etc/oidc-broker), not /app. For example:
#   policies: { dir: /app/policies }
#   audit: { url: "sqlite:/app/data/audit.db" }
#   providers: { jwt: { signing_key_file: /app/data/signing-key.jwk } }
# See docs/configuration.md. The policies baked into the image are examples;
# mount your own over /app/policies.

# ---- build: compile TypeScript and the native better-sqlite3 addon ----------
FROM node:20-bookworm-slim AS build

# better-sqlite3 builds from source when no prebuilt binary is available.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# `npm ci` runs the `prepare` script (the TypeScript build), so the sources
# must be in place before it.
COPY package.json package-lock.json .npmrc tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY bin ./bin
RUN npm ci
RUN npm run build
RUN npm prune --omit=dev

# ---- runtime ----------------------------------------------------------------
FROM node:20-bookworm-slim

ENV NODE_ENV=production
WORKDIR /app

COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY policies ./policies

# Audit log and signing key live here: keep it on a volume. The ownership is
# set before VOLUME so a new named volume starts out owned by `node`.
RUN mkdir -p /app/data && chown node:node /app/data
VOLUME ["/app/data"]

USER node
EXPOSE 8080

# Probe GET /healthz (liveness) and GET /readyz (readiness) from the orchestrator.
ENTRYPOINT ["node", "bin/oidc-broker.js"]
CMD ["serve", "--config", "/etc/oidc-broker/broker.yaml"]
