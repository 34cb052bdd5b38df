#!/usr/bin/env bash
# Installs PostGIS for the local PostgreSQL server and enables it in database `test`, where
# the store tests run (tests/store, as user postgres over 127.0.0.1 with trust auth).
# Idempotent: skips the package install when the extension is already available.
# Needs root for apt-get; call it from .ci/run after .ci/services.sh.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_version="$(ls /etc/postgresql | sort -V | tail -n1)"
if [ -z "$pg_version" ]; then
  echo "postgis.sh: no PostgreSQL server installed (/etc/postgresql is empty)" >&2
  exit 1
fi

if [ ! -f "/usr/share/postgresql/$pg_version/extension/postgis.control" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "postgresql-$pg_version-postgis-3"
fi

if ! port_open 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
fi

psql_admin() { psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 "$@"; }
if [ "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != "1" ]; then
  psql_admin -d postgres -c 'CREATE DATABASE test'
fi
psql_admin -d test -c 'CREATE EXTENSION IF NOT EXISTS postgis'
psql_admin -d test -tAc 'SELECT postgis_lib_version()' | sed 's/^/postgis.sh: PostGIS /'
