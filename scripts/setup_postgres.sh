#!/usr/bin/env bash
# Install PostgreSQL 15 and build pgvector for it, on Debian bookworm (run as root).
#
# pgvector has no bookworm package, so it is built from Debian trixie's source package
# against PostgreSQL 15: a deb-src line for trixie (sources only: no trixie binary can be
# installed by it), `apt-get source pgvector`, make, make install (about 10 s).
# The test suite runs this when PostgreSQL or pgvector is missing (tests/pg_cluster.py);
# it does nothing for a part that is already there.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config

if [ "$(id -u)" != 0 ]; then
    echo "setup_postgres.sh installs packages: run it as root (or install postgresql-15," \
         "postgresql-server-dev-15 and pgvector yourself)" >&2
    exit 1
fi

if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_CONFIG" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        postgresql-15 postgresql-server-dev-15 build-essential dpkg-dev >/dev/null
fi

if [ -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]; then
    exit 0
fi

echo "deb-src http://deb.debian.org/debian trixie main" > /etc/apt/sources.list.d/trixie-src.list
apt-get update -qq
# PostgreSQL may have come from elsewhere: the build needs its headers and the tools anyway.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    postgresql-server-dev-15 build-essential dpkg-dev >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source -qq pgvector >/dev/null 2>&1
cd pgvector-*/
# OPTFLAGS="": no -march=native, so the build runs on any x86-64 this image lands on.
make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
echo "pgvector $(basename "$PWD" | sed 's/pgvector-//') installed for PostgreSQL 15"
