# syntax=docker/dockerfile:1
#
# oidc-broker container image (docs/operations.md).
#
#   docker build -t oidc-broker .
#   docker run -d -p 8080:8080 --read-only --tmpfs /tmp \
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
# See docs/configuration.md.
#
# Policies are not in the image: /app/policies is an empty mount point for
# yours (a ConfigMap, a read-only bind mount). The examples in policies/ are
# written for the development defaults and name issuers (local, gitlab,
# circleci, buildkite) a production config does not configure; a policy that
# names an unconfigured issuer stops the start. Copy the ones you need.
#
# The image runs with a read-only root filesystem: the broker writes only the
# SQLite audit log and, on first start, its signing key, both in /app/data
# (a volume) with the paths above. With a PostgreSQL audit log and a mounted
# key it writes nothing at all.

# One pinned Node release for every stage, so the native better-sqlite3 addon
# built in `deps` is built for the Node that runs it. Pin the digest too in
# your own build (`FROM node:24.22.3-bookworm-slim@sha256:...`).
FROM node:24.22.3-bookworm-slim AS node

# Toolchain for better-sqlite3 when no prebuilt binary matches this Node.
FROM node AS toolchain
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# ---- build: every dependency, TypeScript compiled once ----------------------
FROM toolchain AS build
COPY package.json package-lock.json .npmrc tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY bin ./bin
# The web console (docs/console.md), bundled by the same build into dist/console.
COPY console ./console
COPY scripts/build-console.ts ./scripts/build-console.ts
# `npm ci` runs the `prepare` script, `npm run build`: that is the one build,
# so the sources are in place before it.
RUN npm ci

# ---- deps: production dependencies only ------------------------------------
FROM toolchain AS deps
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts skips `prepare` (TypeScript is a dev dependency) and every
# install script; then the one production dependency that needs its install
# script (package.json allowScripts) gets it: better-sqlite3 fetches or builds
# its addon for this Node.
RUN npm ci --omit=dev --ignore-scripts \
 && npm rebuild better-sqlite3

# ---- runtime ----------------------------------------------------------------
FROM node AS runtime

ENV NODE_ENV=production
WORKDIR /app

# Owned by root, so the broker's user cannot change its own code.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY scripts/healthcheck.js ./scripts/healthcheck.js

# /app/data: SQLite audit log and a generated signing key; keep it on a
# volume. Its ownership is set before VOLUME so a new named volume starts out
# owned by the broker's user. /app/policies: mount point for the policies.
RUN mkdir -p /app/data /app/policies && chown 1000:1000 /app/data
VOLUME ["/app/data"]

# The image's `node` user, by number: Kubernetes' runAsNonRoot can check only
# a numeric user.
USER 1000:1000

# The API (server.port). /metrics moves to server.admin_port (9091 in
# deploy/) when one is configured.
EXPOSE 8080

# Ready means serving and the audit store writable (docs/operations.md). The
# script probes $PORT (default 8080) on loopback; set HEALTHCHECK_URL if the
# broker listens elsewhere.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "scripts/healthcheck.js"]

ENTRYPOINT ["node", "bin/oidc-broker.js"]
CMD ["serve", "--config", "/etc/oidc-broker/broker.yaml"]
