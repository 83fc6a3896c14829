-- Roles: the job writes as txwatch_writer (insert and update on its tables,
-- nothing else); analysts read as analyst. Passwords are set by the
-- migration tool from the environment, never stored here.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'txwatch_writer') THEN
        CREATE ROLE txwatch_writer LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analyst') THEN
        CREATE ROLE analyst LOGIN;
    END IF;
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO txwatch_writer, analyst;

-- INSERT ... ON CONFLICT DO UPDATE reads the row it replaces, so the writer
-- also needs SELECT; it gets no DELETE, TRUNCATE or DDL.
GRANT SELECT, INSERT, UPDATE ON scored_transactions, alerts TO txwatch_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO analyst;
