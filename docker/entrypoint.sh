#!/bin/sh
# The image's entrypoint. Before the tracker starts, the checks of what only Docker
# gets wrong (a secret or /data mounted so the tracker, uid 1000 "node", cannot use
# it), each failing with one line saying what to do; then node replaces this shell
# (exec), so the tracker is PID 1 and gets docker stop's SIGTERM itself.
# test/docker-entrypoint.test.ts runs it, outside Docker.
set -eu

# Client commands, health, --help and --print-config need neither the secrets nor /data.
case "${1-}" in announce|pulse|push|punch|health) exec node dist/src/cli.js "$@" ;; esac
for arg in "$@"; do
  case "$arg" in --help|-h|--print-config|--print-config=*) exec node dist/src/cli.js "$@" ;; esac
done

fail() { echo "sobani-tracker: $*" >&2; exit 2; }
user="uid $(id -u)$(name=$(id -un 2>/dev/null) && echo " ($name)" || true)"

# A flag overrides the environment: then the environment's value is not the one used.
flagged() {
  flag=$1; shift
  for arg in "$@"; do case "$arg" in "--$flag"|"--$flag="*) return 0 ;; esac; done
  return 1
}

# A secret file (SOBANI_*_FILE): a Docker secret, which compose mounts from a host file.
secret() {
  var=$1 file=$2
  if [ -d "$file" ]; then
    fail "$var: $file is a directory, not a file: Docker mounts a directory where the secret's host file (docker-compose.yml's secrets: section) did not exist. Create that file (the header of docker-compose.yml says how), remove any directory Docker left in its place, then: docker compose up -d --force-recreate"
  elif [ ! -e "$file" ]; then
    fail "$var: $file does not exist: mount the secret there (docker run -v /path/on/host:$file:ro, or compose's secrets:), or unset $var"
  elif [ ! -r "$file" ]; then
    fail "$var: $file is not readable by $user, which the tracker runs as: on the host, make the file readable (chmod 0444; coturn, as uid 65534, reads the TURN secret too) and keep the directory holding it private"
  elif [ ! -s "$file" ]; then
    fail "$var: $file is empty: put the secret in it (the header of docker-compose.yml says how)"
  fi
}

if [ -n "${SOBANI_TURN_SECRET_FILE-}" ] && ! flagged turn-secret-file "$@"; then secret SOBANI_TURN_SECRET_FILE "$SOBANI_TURN_SECRET_FILE"; fi
if [ -n "${SOBANI_DIRECTORY_PASSWORD_FILE-}" ] && ! flagged directory-password-file "$@"; then secret SOBANI_DIRECTORY_PASSWORD_FILE "$SOBANI_DIRECTORY_PASSWORD_FILE"; fi

# The snapshot (the image sets SOBANI_SNAPSHOT=/data/sessions.snapshot) is written as a
# temp file renamed over it: its directory must be writable, or the sessions are lost at
# the first save, long after the start.
if [ -n "${SOBANI_SNAPSHOT-}" ] && ! flagged snapshot "$@"; then
  dir=$(dirname "$SOBANI_SNAPSHOT")
  owners="A named volume Docker creates for /data is node's already; a host directory (-v /srv/sobani:/data) must be given to uid 1000 on the host (chown -R 1000:1000 /srv/sobani), and a volume made otherwise from inside (docker run --rm -u 0 -v VOLUME:/data --entrypoint chown sobani-tracker -R 1000:1000 /data). Or run without a snapshot: SOBANI_SNAPSHOT="
  if [ ! -d "$dir" ]; then
    fail "SOBANI_SNAPSHOT: $dir does not exist, so the sessions cannot be saved: mount a volume there (-v sobani-data:$dir), or run without a snapshot: SOBANI_SNAPSHOT="
  elif [ ! -w "$dir" ]; then
    fail "SOBANI_SNAPSHOT: $dir is not writable by $user, which the tracker runs as, so the sessions cannot be saved. $owners"
  elif [ -e "$SOBANI_SNAPSHOT" ] && [ ! -r "$SOBANI_SNAPSHOT" ]; then
    fail "SOBANI_SNAPSHOT: $SOBANI_SNAPSHOT is not readable by $user, which the tracker runs as, so the saved sessions cannot be restored. $owners"
  fi
fi

exec node dist/src/cli.js "$@"
