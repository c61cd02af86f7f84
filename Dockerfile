# sobani-tracker container image.
#   docker build -t sobani-tracker .
#   docker run -p 3000:3000/udp -v sobani-data:/data sobani-tracker [--flags]
# Configuration is SOBANI_* environment variables (or flags after the image name);
# see `docker run --rm sobani-tracker --help`.

# ---- build: all dependencies, TypeScript -> dist/
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json yarn.lock ./
RUN yarn install --frozen-lockfile --non-interactive
COPY tsconfig.json ./
COPY src ./src
RUN yarn build

# ---- runtime: production dependencies and the compiled sources only
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json yarn.lock ./
RUN yarn install --production --frozen-lockfile --non-interactive && yarn cache clean
COPY --from=build /app/dist/src ./dist/src
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
