-- Guiju: the runtime database role for production.
--
-- Guiju connects to PostgreSQL with two roles:
--   * the migration role (GUIJU_MIGRATION_DATABASE_URL) owns the tables and runs `guiju db upgrade`;
--   * the runtime role (GUIJU_DATABASE_URL, name in GUIJU_DB_APP_ROLE, default guiju_app) is what
--     `guiju api`, `guiju worker` and `guiju scheduler` use. It must be LOGIN, NOSUPERUSER and
--     NOBYPASSRLS, so that Row-Level Security applies to it.
--
-- The first migration creates the runtime role (without a password) when the migration role may
-- create roles, and grants it its table privileges either way. Run this file first when the
-- migration role may not create roles, or to give the runtime role a password. Run it as a
-- superuser or a role with CREATEROLE, connected to Guiju's database:
--
--   psql "postgresql://postgres@db.example.internal/guiju" \
--        -v app_password='…' -f infra/postgres/roles.sql
--
-- Optional: -v app_role=NAME (default guiju_app; it must equal GUIJU_DB_APP_ROLE). Instead of -v,
-- the values may come from the environment variables GUIJU_DB_APP_PASSWORD and GUIJU_DB_APP_ROLE
-- (psql 15 or later). Running the file again only resets the password and the attributes.
-- Then run `guiju db upgrade` as the migration role: it grants the table privileges.

\set ON_ERROR_STOP on

\if :{?app_role}
\else
  \getenv app_role GUIJU_DB_APP_ROLE
\endif
\if :{?app_role}
\else
  \set app_role guiju_app
\endif

\if :{?app_password}
\else
  \getenv app_password GUIJU_DB_APP_PASSWORD
\endif
\if :{?app_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql: give the runtime role a password with -v app_password=... or GUIJU_DB_APP_PASSWORD'; END $$;
\endif

SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_role') AS guiju_role_missing \gset
\if :guiju_role_missing
  CREATE ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
\else
  ALTER ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
\endif

GRANT CONNECT ON DATABASE :"DBNAME" TO :"app_role";
GRANT USAGE ON SCHEMA public TO :"app_role";
