-- trygg schema 7: roles, retention through SECURITY DEFINER functions, TRUNCATE
-- refused, anchors written only by the owner, reporting views (issue 16).
--
-- Three group roles (NOLOGIN; roles are cluster-wide, so they are created only
-- when missing). Login roles are members of one of them (docs/auditing.md,
-- "Roles"; deploy/postgres/10-trygg-roles.sh creates them for docker compose):
--   trygg_owner   owns every table, view, sequence and function of trygg; runs
--                 the migrations (the migrating login is made a member).
--   trygg_app     trygg run, bridges, workers, the API: SELECT and INSERT on
--                 the audit tables, no UPDATE, DELETE or TRUNCATE; EXECUTE on
--                 the retention functions.
--   trygg_reader  Grafana and auditors: SELECT on the views of schema
--                 "reporting" only.
-- A superuser bypasses privileges (trygg run with the superuser URL of the
-- demo and the tests keeps working); the triggers below still apply to it.
--
-- Retention no longer trusts a setting the caller makes: trygg.retention='on'
-- lets a row go only when the current user is the table's owner, which a
-- login of trygg_app never is. The owner's SECURITY DEFINER functions
-- trygg_retention_*() are the one way: they remove only rows older than the
-- retention in retention_policy (which only the owner writes), never a
-- chain's head, and write the anchor themselves.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['trygg_owner', 'trygg_app', 'trygg_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- another database of the cluster created it meanwhile
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % is missing and % may not create roles', r, current_user
                        USING HINT = 'create the NOLOGIN roles trygg_owner, trygg_app and '
                                     'trygg_reader as a superuser (deploy/postgres/10-trygg-roles.sh),'
                                     ' or migrate as a role with CREATEROLE';
            END;
        END IF;
    END LOOP;
    IF NOT pg_has_role(current_user, 'trygg_owner', 'MEMBER') THEN
        EXECUTE format('GRANT trygg_owner TO %I', current_user);
    END IF;
END
$$;

-- PostgreSQL 15 no longer lets everyone create in schema public; older
-- servers do, and a role that can create there could shadow a name the
-- owner's functions use. Best effort: only the schema's owner may revoke.
DO $$
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'could not revoke CREATE on schema public from PUBLIC: do it as its owner';
END
$$;

-- What retention keeps. Only the owner writes it (`trygg db retention
-- --set-policy`); the application's own settings may keep more, never less.
CREATE TABLE retention_policy (
    data   text PRIMARY KEY CHECK (data IN ('events', 'dead_letters', 'records', 'access_log')),
    keep   interval NOT NULL CHECK (keep >= interval '1 day'),
    set_by text NOT NULL DEFAULT session_user,
    set_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_policy (data, keep)
VALUES ('events', interval '90 days'),
       ('dead_letters', interval '30 days'),
       ('records', interval '3653 days'),
       ('access_log', interval '3653 days');

-- Is the current user the owner of this table? (Not "a member of": a login
-- of trygg_owner acts as the owner only after SET ROLE, or inside the
-- owner's SECURITY DEFINER functions.)
CREATE FUNCTION trygg_is_table_owner(rel oid) RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner
                    WHERE c.oid = rel AND o.rolname = current_user)
$$;

-- Append-only, except for retention: a DELETE goes through only for the
-- table's owner (i.e. inside trygg_retention_*()), with trygg.retention on,
-- and then only
-- - for a chained table, rows at or before the newest anchor of the table;
-- - for another append-only table (alert_deliveries), rows whose "at" is
--   before trygg.retention_cutoff.
-- UPDATE is always refused.
CREATE OR REPLACE FUNCTION trygg_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    anchored bigint;
    old_row jsonb;
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('trygg.retention', true) = 'on'
       AND trygg_is_table_owner(TG_RELID) THEN
        old_row := to_jsonb(OLD);
        IF TG_TABLE_NAME IN ('alert_records', 'access_log', 'alert_exceptions') THEN
            SELECT max(a.chain_seq) INTO anchored FROM chain_anchors a WHERE a.tbl = TG_TABLE_NAME;
            IF (old_row ->> 'chain_seq')::bigint <= anchored THEN
                RETURN OLD;
            END IF;
        ELSIF TG_TABLE_NAME <> 'chain_anchors' AND old_row ? 'at'
              AND nullif(current_setting('trygg.retention_cutoff', true), '') IS NOT NULL
              AND (old_row ->> 'at')::timestamptz
                  < current_setting('trygg.retention_cutoff', true)::timestamptz THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING HINT = 'old rows go only through retention (trygg db retention)';
END
$$;

-- TRUNCATE fires no row trigger: a statement-level one refuses it, for every
-- user (a superuser may still disable triggers; `trygg audit verify --anchor`
-- detects what that leaves behind).
CREATE FUNCTION trygg_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME
        USING HINT = 'old rows go only through retention (trygg db retention)';
END
$$;
CREATE TRIGGER catalogue_versions_no_truncate BEFORE TRUNCATE ON catalogue_versions
    FOR EACH STATEMENT EXECUTE FUNCTION trygg_refuse_truncate();
-- (every table with the append-only row trigger gets one from trygg_apply_roles)

-- An anchor is written by the owner only (in practice by
-- trygg_retention_chain), and names a real row of its chain that is not the
-- head: the row's position and its hash. An anchor that names no row, or the
-- head (after which everything could go), is refused whoever writes it.
CREATE FUNCTION trygg_anchor_guard() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    row_hash bytea;
    head bigint;
BEGIN
    IF NOT trygg_is_table_owner(TG_RELID) THEN
        RAISE EXCEPTION 'chain_anchors: only the owner writes anchors (% may not)', current_user
            USING HINT = 'retention writes them: trygg db retention';
    END IF;
    IF NEW.tbl NOT IN ('alert_records', 'access_log', 'alert_exceptions') THEN
        RAISE EXCEPTION 'chain_anchors: % is not a chained table', NEW.tbl;
    END IF;
    IF NEW.chain_seq = 0 THEN
        IF NEW.hash IS DISTINCT FROM trygg_chain_genesis(NEW.tbl) THEN
            RAISE EXCEPTION 'chain_anchors: position 0 of % is its genesis hash only', NEW.tbl;
        END IF;
        RETURN NEW;
    END IF;
    EXECUTE format('SELECT hash FROM %I WHERE chain_seq = $1', NEW.tbl) INTO row_hash
        USING NEW.chain_seq;
    IF row_hash IS NULL OR row_hash <> NEW.hash THEN
        RAISE EXCEPTION 'chain_anchors: % has no row at chain position % with that hash',
            NEW.tbl, NEW.chain_seq;
    END IF;
    EXECUTE format('SELECT max(chain_seq) FROM %I', NEW.tbl) INTO head;
    IF NEW.chain_seq >= head THEN
        RAISE EXCEPTION 'chain_anchors: position % is the head of %: the head is never anchored',
            NEW.chain_seq, NEW.tbl;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER chain_anchors_guard BEFORE INSERT ON chain_anchors
    FOR EACH ROW EXECUTE FUNCTION trygg_anchor_guard();

-- ------------------------------------------------------------------ retention

-- The cutoff retention applies: rows older than it may go. Anyone but the
-- owner gets at most now() minus the policy's keep (asking for a later cutoff
-- keeps more, never less); the owner (a member of the tables' owner, or a
-- superuser) may ask for any cutoff: it could change the policy anyway.
CREATE FUNCTION trygg_retention_cutoff(what text, asked timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public AS $$
DECLARE
    kept interval;
    floor_at timestamptz;
BEGIN
    SELECT p.keep INTO kept FROM retention_policy p WHERE p.data = what;
    IF kept IS NULL THEN
        RAISE EXCEPTION 'retention_policy has no row for %', what;
    END IF;
    floor_at := now() - kept;
    IF asked IS NULL THEN
        RETURN floor_at;
    END IF;
    IF pg_has_role(session_user,
                   (SELECT c.relowner FROM pg_class c WHERE c.oid = 'retention_policy'::regclass),
                   'MEMBER') THEN
        RETURN asked;
    END IF;
    RETURN least(asked, floor_at);
END
$$;

-- Raw events older than the cutoff: whole chunks on TimescaleDB (chunks is
-- their number), else one batch of rows (removed; call again while it is
-- the batch size).
CREATE FUNCTION trygg_retention_events(cutoff timestamptz, batch integer,
                                       OUT chunks integer, OUT removed bigint,
                                       OUT applied timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    hyper boolean := false;
BEGIN
    applied := trygg_retention_cutoff('events', cutoff);
    chunks := 0;
    removed := 0;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables'
                ' WHERE hypertable_schema = ''public'' AND hypertable_name = ''events'')'
            INTO hyper;
    END IF;
    IF hyper THEN
        EXECUTE 'SELECT count(*) FROM drop_chunks(''public.events''::regclass, older_than => $1)'
            INTO chunks USING applied;
    ELSE
        DELETE FROM events WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM events WHERE time < applied LIMIT greatest(batch, 1)));
        GET DIAGNOSTICS removed = ROW_COUNT;
    END IF;
END
$$;

-- One batch of dead letters older than the cutoff.
CREATE FUNCTION trygg_retention_dead_letters(cutoff timestamptz, batch integer,
                                             OUT removed bigint, OUT applied timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    applied := trygg_retention_cutoff('dead_letters', cutoff);
    DELETE FROM dead_letters WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM dead_letters WHERE received_at < applied LIMIT greatest(batch, 1)));
    GET DIAGNOSTICS removed = ROW_COUNT;
END
$$;

-- One batch of a chain's prefix: the rows before the first one that must
-- stay, at most `batch` of them, and never the head. The anchor (the last
-- removed row's position and hash) is written first, in the same
-- transaction. upto is NULL when nothing may go; more says whether another
-- call would remove more.
--   alert_records: records of alerts that are closed and have no record at
--     or after the cutoff (policy "records");
--   alert_exceptions: reports recorded before the cutoff whose alert has no
--     records left (policy "records");
--   access_log: rows before the cutoff (policy "access_log").
CREATE FUNCTION trygg_retention_chain(tbl text, cutoff timestamptz, batch integer,
                                      OUT upto bigint, OUT removed bigint, OUT more boolean,
                                      OUT applied timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    keep_from bigint;
    first_seq bigint;
    head_seq bigint;
    lim bigint;
    row_hash bytea;
BEGIN
    removed := 0;
    more := false;
    IF tbl = 'alert_records' THEN
        applied := trygg_retention_cutoff('records', cutoff);
        SELECT min(r.chain_seq) INTO keep_from FROM alert_records r
         WHERE r.alert_id IN (SELECT x.alert_id FROM alert_records x WHERE x.at >= applied)
            OR r.alert_id IN (SELECT a.id FROM alerts a
                               WHERE a.state NOT IN ('resolved', 'cancelled'));
        SELECT min(r.chain_seq), max(r.chain_seq) INTO first_seq, head_seq FROM alert_records r;
    ELSIF tbl = 'alert_exceptions' THEN
        applied := trygg_retention_cutoff('records', cutoff);
        SELECT min(e.chain_seq) INTO keep_from FROM alert_exceptions e
         WHERE e.recorded_at >= applied
            OR EXISTS (SELECT 1 FROM alert_records r WHERE r.alert_id = e.alert_id);
        SELECT min(e.chain_seq), max(e.chain_seq) INTO first_seq, head_seq
          FROM alert_exceptions e;
    ELSIF tbl = 'access_log' THEN
        applied := trygg_retention_cutoff('access_log', cutoff);
        SELECT min(l.chain_seq) INTO keep_from FROM access_log l WHERE l.at >= applied;
        SELECT min(l.chain_seq), max(l.chain_seq) INTO first_seq, head_seq FROM access_log l;
    ELSE
        RAISE EXCEPTION 'trygg_retention_chain: % is not a chained table', tbl;
    END IF;
    IF head_seq IS NULL THEN
        RETURN;
    END IF;
    lim := head_seq - 1;  -- never the head
    IF keep_from IS NOT NULL THEN
        lim := least(lim, keep_from - 1);
    END IF;
    upto := least(lim, first_seq + greatest(batch, 1) - 1);
    IF upto < first_seq THEN
        upto := NULL;
        RETURN;
    END IF;
    EXECUTE format('SELECT hash FROM %I WHERE chain_seq = $1', tbl) INTO row_hash USING upto;
    IF row_hash IS NULL THEN
        RAISE EXCEPTION '%: no hashed row at chain position %', tbl, upto;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I WHERE chain_seq <= $1', tbl) INTO removed USING upto;
    INSERT INTO chain_anchors (tbl, chain_seq, hash, rows_removed, cutoff, reason)
    VALUES (tbl, upto, row_hash, removed, applied, 'retention');
    PERFORM set_config('trygg.retention', 'on', true);
    EXECUTE format('DELETE FROM %I WHERE chain_seq <= $1', tbl) USING upto;
    PERFORM set_config('trygg.retention', '', true);
    more := upto < lim;
END
$$;

-- Alert rows (with their notifications and deliveries) that nothing refers
-- to any more: closed, raised before the cutoff, no records, no reports.
CREATE FUNCTION trygg_retention_alerts(cutoff timestamptz,
                                       OUT removed bigint, OUT applied timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    gone uuid[];
BEGIN
    applied := trygg_retention_cutoff('records', cutoff);
    PERFORM set_config('trygg.retention', 'on', true);
    PERFORM set_config('trygg.retention_cutoff', applied::text, true);
    SELECT coalesce(array_agg(a.id), '{}') INTO gone FROM alerts a
     WHERE a.raised_at < applied AND a.state IN ('resolved', 'cancelled')
       AND NOT EXISTS (SELECT 1 FROM alert_records r WHERE r.alert_id = a.id)
       AND NOT EXISTS (SELECT 1 FROM alert_exceptions e WHERE e.alert_id = a.id);
    DELETE FROM alert_deliveries d WHERE d.alert_id = ANY (gone);
    DELETE FROM alert_notifications n WHERE n.alert_id = ANY (gone);
    DELETE FROM alerts a WHERE a.id = ANY (gone);
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('trygg.retention', '', true);
    PERFORM set_config('trygg.retention_cutoff', '', true);
END
$$;

-- ------------------------------------------------------------------ reporting

-- What Grafana and auditors (trygg_reader) may read: views without the
-- hashes, free-text notes, care plans, positions or raw payloads. Give the
-- reader's login `search_path = reporting, public` and the dashboards' SQL
-- (unqualified names) reads these views.
CREATE SCHEMA reporting;
CREATE VIEW reporting.alerts AS
    SELECT id, resident, team, rule, catalogue_version, code, severity, device, title,
           raised_at, state, repeat_count, suppressed, suppressed_reason, flapping, assignee,
           outcome, shadow, version, cancel_reason, closed_at, escalation_level, held_until,
           updated_at
      FROM public.alerts;
CREATE VIEW reporting.alert_records AS
    SELECT id, alert_id, seq, step, at FROM public.alert_records;
CREATE VIEW reporting.residents AS
    SELECT id, team, timezone, updated_at FROM public.residents;
CREATE VIEW reporting.devices AS
    SELECT id, resident, kind, room, heartbeat, last_seen, battery, online, updated_at
      FROM public.devices;
CREATE VIEW reporting.events AS
    SELECT time, device, event_id, type, resident, value, room, received_at, late
      FROM public.events;
CREATE VIEW reporting.dead_letters AS
    SELECT id, received_at, topic, reason, device, payload_size FROM public.dead_letters;
CREATE VIEW reporting.access_log AS
    SELECT id, at, actor, role, action, resident, detail FROM public.access_log;

-- ------------------------------------------------------------------ ownership and grants

-- Idempotent: run by this migration and by `trygg db migrate` after every
-- later one, so a table a later migration adds is owned by trygg_owner and
-- granted like its peers without that migration having to know:
--   SELECT only        chain_anchors, retention_policy, trygg_schema
--   SELECT, INSERT     every table with the append-only trigger (the audit
--                      tables), events, dead_letters, alert_notifications
--   + UPDATE           alerts, catalogue_versions (their own triggers guard them)
--   + UPDATE, DELETE   every other table (registry, silences, API users, ...)
-- Every table with the append-only trigger also gets the TRUNCATE trigger.
CREATE FUNCTION trygg_apply_roles() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    r record;
    privs text;
BEGIN
    -- the schema first: a view's new owner needs CREATE on its schema
    IF (SELECT nspowner FROM pg_namespace WHERE nspname = 'reporting') <> 'trygg_owner'::regrole
    THEN
        ALTER SCHEMA reporting OWNER TO trygg_owner;
    END IF;
    FOR r IN
        SELECT c.oid::regclass AS obj, c.relkind FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('public', 'reporting') AND c.relkind IN ('r', 'p', 'v', 'm')
           AND c.relowner <> 'trygg_owner'::regrole
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO trygg_owner',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      ELSE 'TABLE' END, r.obj);
    END LOOP;
    -- sequences not owned by a column (those followed their table)
    FOR r IN
        SELECT c.oid::regclass AS obj FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'S'
           AND c.relowner <> 'trygg_owner'::regrole
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO trygg_owner', r.obj);
    END LOOP;
    FOR r IN
        SELECT p.oid::regprocedure AS fn FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
           AND p.proowner <> 'trygg_owner'::regrole
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO trygg_owner', r.fn);
    END LOOP;

    FOR r IN
        SELECT c.oid::regclass AS obj, c.relname,
               EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid
                          AND t.tgfoid = 'trygg_append_only()'::regprocedure) AS append_only
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
    LOOP
        privs := CASE
            WHEN r.relname IN ('chain_anchors', 'retention_policy', 'trygg_schema') THEN 'SELECT'
            WHEN r.append_only OR r.relname IN ('events', 'dead_letters', 'alert_notifications')
                THEN 'SELECT, INSERT'
            WHEN r.relname IN ('alerts', 'catalogue_versions') THEN 'SELECT, INSERT, UPDATE'
            ELSE 'SELECT, INSERT, UPDATE, DELETE'
        END;
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, trygg_app, trygg_reader', r.obj);
        EXECUTE format('GRANT %s ON %s TO trygg_app', privs, r.obj);
        IF r.append_only AND NOT EXISTS (
            SELECT 1 FROM pg_trigger t WHERE t.tgrelid = r.obj
               AND t.tgfoid = 'trygg_refuse_truncate()'::regprocedure) THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s'
                           ' FOR EACH STATEMENT EXECUTE FUNCTION trygg_refuse_truncate()',
                           r.relname || '_no_truncate', r.obj);
        END IF;
    END LOOP;
    BEGIN
        GRANT USAGE ON SCHEMA public TO trygg_app, trygg_reader;  -- PUBLIC has it by default
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO trygg_app;
    REVOKE ALL ON SCHEMA reporting FROM PUBLIC;
    GRANT USAGE ON SCHEMA reporting TO trygg_reader;
    REVOKE ALL ON ALL TABLES IN SCHEMA reporting FROM PUBLIC, trygg_app;
    GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO trygg_reader;

    -- The owner's functions that act as the owner: the retention functions
    -- for the application only; the rest for nobody but the owner.
    FOR r IN
        SELECT p.oid::regprocedure AS fn, p.proname FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prosecdef
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.fn);
        IF r.proname IN ('trygg_retention_events', 'trygg_retention_dead_letters',
                         'trygg_retention_chain', 'trygg_retention_alerts') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO trygg_app', r.fn);
        END IF;
    END LOOP;
    REVOKE ALL ON FUNCTION trygg_apply_roles() FROM PUBLIC;
END
$$;

SELECT trygg_apply_roles();
