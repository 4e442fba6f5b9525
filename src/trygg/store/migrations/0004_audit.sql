-- trygg schema 4: auditing -- a tamper-evident trail, exception reports,
-- retention anchors and the indexes the response-time reports need.
--
-- Hash chains (docs/auditing.md). alert_records, access_log and
-- alert_exceptions are each one chain: every row gets its position
-- (chain_seq), the previous row's hash (prev_hash) and
--     hash = sha256(prev_hash || convert_to(trygg_chain_text(row), 'UTF8'))
-- where trygg_chain_text is the row as canonical JSON (jsonb's sorted keys,
-- timestamps in UTC, without hash/prev_hash and without nulls, so a nullable
-- column added later does not change old rows' text). A BEFORE
-- INSERT trigger computes it, so every writer is covered. Writers of one
-- table are serialised by a transaction-level advisory lock; the trigger then
-- reads the newest hash with a fresh snapshot (READ COMMITTED). The unique
-- index on chain_seq makes a writer that could not see the newest row (e.g.
-- under REPEATABLE READ) fail instead of forking the chain.
--
-- Retention may remove the oldest rows of a chain only after recording where
-- the chain then starts: chain_anchors holds (table, chain_seq, hash) of the
-- last removed row. Verification starts from the newest anchor at or before
-- the first remaining row.

CREATE TABLE chain_anchors (
    tbl          text NOT NULL,
    chain_seq    bigint NOT NULL,          -- the last row removed (0: the start of the chain)
    hash         bytea NOT NULL,           -- that row's hash (genesis: sha256 of a fixed text)
    rows_removed bigint NOT NULL DEFAULT 0,
    cutoff       timestamptz,              -- rows older than this were removed
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tbl, chain_seq)
);
CREATE TRIGGER chain_anchors_append_only BEFORE UPDATE OR DELETE ON chain_anchors
    FOR EACH ROW EXECUTE FUNCTION trygg_append_only();

-- Exception reports: cause, action and outcome for an alert that breached a
-- target (REFERENCE.md section 2). Append-only and chained: a correction is
-- a new report for the same alert and kind.
CREATE TABLE alert_exceptions (
    id          bigserial PRIMARY KEY,
    alert_id    uuid NOT NULL REFERENCES alerts (id),
    kind        text NOT NULL,             -- answer, arrival, completion, other
    cause       text NOT NULL,
    action      text NOT NULL,
    outcome     text,
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    chain_seq   bigint,
    prev_hash   bytea,
    hash        bytea
);
CREATE INDEX alert_exceptions_alert ON alert_exceptions (alert_id, id);

ALTER TABLE alert_records ADD COLUMN chain_seq bigint;
ALTER TABLE access_log ADD COLUMN chain_seq bigint;
CREATE UNIQUE INDEX alert_records_chain ON alert_records (chain_seq);
CREATE UNIQUE INDEX access_log_chain ON access_log (chain_seq);
CREATE UNIQUE INDEX alert_exceptions_chain ON alert_exceptions (chain_seq);

-- The canonical text of a row: jsonb without hash/prev_hash and without
-- nulls. The SET clause fixes the time zone, so timestamps render the same
-- whatever the writer's or the verifier's session says. The trigger below
-- inlines the same expression under the same setting.
CREATE FUNCTION trygg_chain_text(r anyelement) RETURNS text
    LANGUAGE sql STABLE SET "TimeZone" TO 'UTC' AS $$
    SELECT jsonb_strip_nulls(to_jsonb(r) - 'hash' - 'prev_hash')::text
$$;

CREATE FUNCTION trygg_chain_genesis(tbl text) RETURNS bytea
    LANGUAGE sql IMMUTABLE AS $$ SELECT sha256(convert_to('trygg chain genesis ' || tbl, 'UTF8')) $$;

-- The chain head of a table: (chain_seq, hash) of its newest row, else of its
-- newest anchor (after retention removed every row), else the genesis.
CREATE FUNCTION trygg_chain_head(tbl text, OUT seq bigint, OUT hash bytea)
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF tbl = 'alert_records' THEN
        SELECT t.chain_seq, t.hash INTO seq, hash FROM alert_records t
         WHERE t.chain_seq IS NOT NULL ORDER BY t.chain_seq DESC LIMIT 1;
    ELSIF tbl = 'access_log' THEN
        SELECT t.chain_seq, t.hash INTO seq, hash FROM access_log t
         WHERE t.chain_seq IS NOT NULL ORDER BY t.chain_seq DESC LIMIT 1;
    ELSIF tbl = 'alert_exceptions' THEN
        SELECT t.chain_seq, t.hash INTO seq, hash FROM alert_exceptions t
         WHERE t.chain_seq IS NOT NULL ORDER BY t.chain_seq DESC LIMIT 1;
    ELSE
        RAISE EXCEPTION 'trygg_chain_head: % is not a chained table', tbl;
    END IF;
    IF seq IS NULL THEN
        SELECT a.chain_seq, a.hash INTO seq, hash FROM chain_anchors a
         WHERE a.tbl = trygg_chain_head.tbl ORDER BY a.chain_seq DESC LIMIT 1;
    END IF;
    IF seq IS NULL THEN
        seq := 0;
        hash := trygg_chain_genesis(tbl);
    END IF;
END
$$;

CREATE FUNCTION trygg_chain_link() RETURNS trigger
    LANGUAGE plpgsql SET "TimeZone" TO 'UTC' AS $$
DECLARE
    head record;
BEGIN
    PERFORM pg_advisory_xact_lock(2053, hashtext('trygg_chain:' || TG_TABLE_NAME));
    head := trygg_chain_head(TG_TABLE_NAME);
    NEW.chain_seq := head.seq + 1;
    NEW.prev_hash := head.hash;
    NEW.hash := sha256(head.hash
        || convert_to(jsonb_strip_nulls(to_jsonb(NEW) - 'hash' - 'prev_hash')::text, 'UTF8'));
    RETURN NEW;
END
$$;

-- Append-only, except for retention (trygg.store.retention), inside a
-- transaction that set trygg.retention to 'on':
-- - a chained table gives up only its anchored prefix: rows at or before the
--   newest anchor of the table;
-- - another append-only table (e.g. alert_deliveries) gives up only rows whose
--   "at" is before trygg.retention_cutoff.
-- UPDATE is always refused.
CREATE OR REPLACE FUNCTION trygg_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    anchored bigint;
    old_row jsonb;
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('trygg.retention', true) = 'on' THEN
        old_row := to_jsonb(OLD);
        IF TG_TABLE_NAME IN ('alert_records', 'access_log', 'alert_exceptions') THEN
            SELECT max(chain_seq) INTO anchored FROM chain_anchors WHERE tbl = TG_TABLE_NAME;
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
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;

-- Rows written before this migration join the chain in id order.
INSERT INTO chain_anchors (tbl, chain_seq, hash, reason)
VALUES ('alert_records', 0, trygg_chain_genesis('alert_records'), 'genesis'),
       ('access_log', 0, trygg_chain_genesis('access_log'), 'genesis'),
       ('alert_exceptions', 0, trygg_chain_genesis('alert_exceptions'), 'genesis');

DO $$
DECLARE
    t text;
    r record;
    prev bytea;
    n bigint;
    h bytea;
BEGIN
    FOREACH t IN ARRAY ARRAY['alert_records', 'access_log'] LOOP
        EXECUTE format('ALTER TABLE %I DISABLE TRIGGER %I', t, t || '_append_only');
        prev := trygg_chain_genesis(t);
        n := 0;
        FOR r IN EXECUTE format('SELECT id FROM %I ORDER BY id', t) LOOP
            n := n + 1;
            EXECUTE format('UPDATE %I SET chain_seq = $1, prev_hash = $2, hash = NULL'
                           ' WHERE id = $3', t) USING n, prev, r.id;
            EXECUTE format('SELECT sha256($1 || convert_to(trygg_chain_text(x), ''UTF8''))'
                           ' FROM %I x WHERE id = $2', t) INTO h USING prev, r.id;
            EXECUTE format('UPDATE %I SET hash = $1 WHERE id = $2', t) USING h, r.id;
            prev := h;
        END LOOP;
        EXECUTE format('ALTER TABLE %I ENABLE TRIGGER %I', t, t || '_append_only');
    END LOOP;
END
$$;

CREATE TRIGGER alert_records_chain BEFORE INSERT ON alert_records
    FOR EACH ROW EXECUTE FUNCTION trygg_chain_link();
CREATE TRIGGER access_log_chain BEFORE INSERT ON access_log
    FOR EACH ROW EXECUTE FUNCTION trygg_chain_link();
CREATE TRIGGER alert_exceptions_chain BEFORE INSERT ON alert_exceptions
    FOR EACH ROW EXECUTE FUNCTION trygg_chain_link();
CREATE TRIGGER alert_exceptions_append_only BEFORE UPDATE OR DELETE ON alert_exceptions
    FOR EACH ROW EXECUTE FUNCTION trygg_append_only();

-- Response-time reports: the steps the KPIs read, per alert, index-only.
CREATE INDEX alert_records_kpi ON alert_records (alert_id, step, at)
    WHERE step IN ('raised', 'acknowledged', 'arrived', 'resolved', 'cancelled');
CREATE INDEX access_log_at ON access_log (at);
