# sobani-tracker container image.
#   docker build -t sobani-tracker .
#   docker run -p 3000:3000/udp -v sobani-data:/data sobani-tracker [--flags]
# Configuration is SOBANI_* environment variables (or flags after the image name);
# see `docker run --rm sobani-tracker --help`. Set the metrics listener by environment
# (SOBANI_METRICS_PORT, SOBANI_METRICS_HOST), not by flags: the HEALTHCHECK reads the same
# environment, and never sees the flags.
# The tracker runs as `node` (uid 1000): /data and any secret file it is given must be
# usable by uid 1000 (the entrypoint checks, and says what to do).

# ---- build: the npm package, made by `npm pack` as for the registry: its prepack
# compiles TypeScript to dist/src and prebuilds the native UDP addon (prebuildify).
FROM node:20-bookworm-slim AS build
WORKDIR /app
# node-gyp compiles the prebuild (src/io/native/udp.c) against the image's own Node headers.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json yarn.lock ./
# No install script: prepack makes the addon the package ships, below.
RUN yarn install --frozen-lockfile --non-interactive --ignore-scripts
COPY tsconfig.json tsconfig.build.json binding.gyp ./
COPY src ./src
# npm pack puts the README and LICENSE in every package, this one too.
COPY README.md LICENSE ./
RUN npm pack && mv sobani-tracker-*.tgz sobani-tracker.tgz

# ---- runtime: the package's own files, unpacked from that tarball, and the lockfile's
# production dependencies. The addon is the package's prebuild (prebuilds/<platform>-<arch>/),
# found by node-gyp-build as in any npm install of the package: no compiler here, no install script.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json yarn.lock ./
RUN yarn install --production --frozen-lockfile --non-interactive --ignore-scripts && yarn cache clean
COPY --from=build /app/sobani-tracker.tgz ./
RUN tar -xzf sobani-tracker.tgz --strip-components=1 && rm sobani-tracker.tgz
# The snapshot lives on a volume; it must belong to the user the tracker runs as. A named
# volume Docker creates is given this directory's owner; a host directory keeps the host's.
RUN mkdir -p /data && chown node:node /data
VOLUME /data
COPY docker/entrypoint.sh docker/
USER node

ENV SOBANI_PORT=3000
ENV SOBANI_METRICS_PORT=9100
ENV SOBANI_SNAPSHOT=/data/sessions.snapshot
ENV SOBANI_SNAPSHOT_INTERVAL=60
EXPOSE 3000/udp

# The tracker's own client: no curl in the image. Exit 0 only on /healthz 200. It finds the
# listener as the tracker does, from SOBANI_METRICS_PORT and SOBANI_METRICS_HOST.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "dist/src/cli.js", "health"]

# The entrypoint checks the secrets and /data, then execs node: node is PID 1 and handles
# SIGTERM itself: it saves the snapshot and exits 0 (docker stop waits 10 s).
ENTRYPOINT ["/bin/sh", "docker/entrypoint.sh"]
