#!/bin/sh
# Make the cluster and its user and database on the first start, then serve.
set -eu
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
    initdb -D "$data" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256
    rm /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$data/pg_hba.conf"
    postgres -D "$data" -c listen_addresses='' &
    setup=$!
    until pg_isready -q -h /var/run/postgresql; do sleep 0.2; done
    psql -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    kill "$setup"; wait "$setup" || true
fi
exec postgres -D "$data" -c listen_addresses='*'
