#!/bin/sh
# The database roles of docker-compose.yml (docs/deploy.md, docs/auditing.md "Roles").
#
# Run by the timescaledb image once, when its data volume is new (mounted into
# /docker-entrypoint-initdb.d), as the superuser POSTGRES_USER. Idempotent, so it
# also brings an existing cluster up to date (passwords from the environment):
#   docker compose exec timescaledb sh /docker-entrypoint-initdb.d/10-trygg-roles.sh
#
# Group roles (NOLOGIN, as migration 0007 creates them when missing) and a login each:
#   trygg_owner   owns the schema        login trygg_migrator  `trygg db migrate` (service migrate)
#   trygg_app     INSERT/SELECT trail    login trygg_service   trygg run, bridges, workers, api
#   trygg_reader  reporting views only   login grafana_reader  Grafana (search_path reporting)
# No service connects as the superuser. The database is owned by trygg_owner, so its
# members may create in schema public (PostgreSQL 15 grants that to the database owner).
set -eu

: "${TRYGG_OWNER_DB_PASSWORD:?set TRYGG_OWNER_DB_PASSWORD}"
: "${TRYGG_APP_DB_PASSWORD:?set TRYGG_APP_DB_PASSWORD}"
: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}"

psql -v ON_ERROR_STOP=1 -X -q \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-trygg}" \
    --set=owner_pw="$TRYGG_OWNER_DB_PASSWORD" \
    --set=app_pw="$TRYGG_APP_DB_PASSWORD" \
    --set=reader_pw="$GRAFANA_DB_PASSWORD" \
    --set=db="${POSTGRES_DB:-trygg}" <<'SQL'
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT format('CREATE ROLE %I NOLOGIN', r)
  FROM unnest(ARRAY['trygg_owner', 'trygg_app', 'trygg_reader']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
SELECT format('CREATE ROLE %I LOGIN', r)
  FROM unnest(ARRAY['trygg_migrator', 'trygg_service', 'grafana_reader']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec

ALTER ROLE trygg_migrator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_pw';
ALTER ROLE trygg_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
ALTER ROLE grafana_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'reader_pw';
GRANT trygg_owner TO trygg_migrator;
GRANT trygg_app TO trygg_service;
GRANT trygg_reader TO grafana_reader;
-- the dashboards' unqualified table names are the reporting views for Grafana
ALTER ROLE grafana_reader SET search_path = reporting, public;
ALTER DATABASE :"db" OWNER TO trygg_owner;
SQL
echo "trygg roles ready in database ${POSTGRES_DB:-trygg}"
