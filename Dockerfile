# sobani-tracker container image.
#   docker build -t sobani-tracker .
#   docker run -p 3000:3000/udp -v sobani-data:/data sobani-tracker [--flags]
# Configuration is SOBANI_* environment variables (or flags after the image name);
# see `docker run --rm sobani-tracker --help`.

# ---- build: all dependencies, the native UDP addon, TypeScript -> dist/
FROM node:20-bookworm-slim AS build
WORKDIR /app
# node-gyp builds the addon (src/io/native/udp.c) against the image's own Node headers.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json yarn.lock binding.gyp ./
COPY src/io/native ./src/io/native
RUN yarn install --frozen-lockfile --non-interactive && test -f build/Release/sobani_udp.node
COPY tsconfig.json ./
COPY src ./src
RUN yarn build

# ---- runtime: production dependencies and the compiled sources only
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json yarn.lock ./
# No compiler here: the addon comes built from the build stage (--ignore-scripts skips the build).
RUN yarn install --production --frozen-lockfile --non-interactive --ignore-scripts && yarn cache clean
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/build/Release/sobani_udp.node ./build/Release/sobani_udp.node
# The snapshot lives on a volume; it must belong to the user the tracker runs as.
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node

ENV SOBANI_PORT=3000
ENV SOBANI_METRICS_PORT=9100
ENV SOBANI_SNAPSHOT=/data/sessions.snapshot
ENV SOBANI_SNAPSHOT_INTERVAL=60
EXPOSE 3000/udp

# The tracker's own client: no curl in the image. Exit 0 only on /healthz 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "dist/src/cli.js", "health", "--metrics-port", "9100"]

# node is PID 1 and handles SIGTERM itself: it saves the snapshot and exits 0 (docker stop waits 10 s).
ENTRYPOINT ["node", "dist/src/cli.js"]
