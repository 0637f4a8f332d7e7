#!/usr/bin/env bash
# Run a command with PostgreSQL and Redis reachable, and exit with its status:
#   scripts/with-services.sh .venv/bin/python -m pytest
#
# DISTILL_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres; the suite
# creates and drops its own database there) and DISTILL_TEST_REDIS_URL (default
# redis://127.0.0.1:6379/15) name them. When a variable is unset and its default does not answer,
# a throwaway server is started from the installed binaries, exported, and stopped on exit.
# When neither works, this fails and names what to install. Expects .venv (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

py=.venv/bin/python
scratch=$(mktemp -d "${TMPDIR:-/tmp}/distill-test.XXXXXX")
pg_ctl_bin=""
redis_pidfile=""

# shellcheck disable=SC2317  # called by the trap
cleanup() {
  if [ -n "$pg_ctl_bin" ]; then
    as_postgres "$pg_ctl_bin" -D "$scratch/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "$redis_pidfile" ] && [ -f "$redis_pidfile" ]; then
    local pid
    pid=$(cat "$redis_pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

missing() {
  echo "error: $1 is needed by the tests and none answers." >&2
  echo "  Install it (Debian/Ubuntu: apt-get install postgresql redis-server) and rerun," >&2
  echo "  or point $2 at a running server." >&2
  exit 1
}

answers() { "$py" tests/services.py "$1" 2>/dev/null; }

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PostgreSQL refuses to run as root, so as root the throwaway server runs as the postgres user.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    "$(command -v runuser || echo /usr/sbin/runuser)" -u postgres -- "$@"
  else
    "$@"
  fi
}

# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin.
pg_bin() {
  local found
  found=$(command -v "$1" || compgen -G "/usr/lib/postgresql/*/bin/$1" | sort -V | tail -n 1)
  [ -n "$found" ] && echo "$found"
}

start_postgres() {
  local initdb pg_ctl port
  initdb=$(pg_bin initdb) && pg_ctl=$(pg_bin pg_ctl) || return 1
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || return 1
    chown postgres "$scratch"
  fi
  port=$(free_port)
  echo "Starting a throwaway PostgreSQL on port $port"
  as_postgres "$initdb" -D "$scratch/pg" -U postgres -A trust --no-sync >"$scratch/initdb.log" 2>&1 ||
    { cat "$scratch/initdb.log" >&2; return 1; }
  pg_ctl_bin=$pg_ctl
  as_postgres "$pg_ctl" -D "$scratch/pg" -l "$scratch/pg.log" -w -t 30 \
    -o "-p $port -k $scratch -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
    { cat "$scratch/pg.log" >&2; return 1; }
  export DISTILL_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

start_redis() {
  local port
  command -v redis-server >/dev/null || return 1
  port=$(free_port)
  echo "Starting a throwaway Redis on port $port"
  redis_pidfile=$scratch/redis.pid
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$scratch" --pidfile "$redis_pidfile" --logfile "$scratch/redis.log" || return 1
  export DISTILL_TEST_REDIS_URL="redis://127.0.0.1:$port/15"
  for _ in $(seq 50); do answers redis && return 0; sleep 0.1; done
  cat "$scratch/redis.log" >&2
  return 1
}

if [ -z "${DISTILL_TEST_DATABASE_URL:-}" ] && ! answers postgres; then
  start_postgres || missing PostgreSQL DISTILL_TEST_DATABASE_URL
fi
if [ -z "${DISTILL_TEST_REDIS_URL:-}" ] && ! answers redis; then
  start_redis || missing Redis DISTILL_TEST_REDIS_URL
fi
"$py" tests/services.py # a variable set by hand to a server that is down fails here, loudly

status=0
"$@" || status=$?
exit "$status"
