-- trygg schema 1: registry, events, dead letters, alerts and their lifecycle, access log.
--
-- Works on TimescaleDB and on plain PostgreSQL: the events table becomes a
-- hypertable only where the extension is preloaded (the migrator sets
-- trygg.timescaledb to 'on' or 'off' after asking the server).

CREATE TABLE residents (
    id          text PRIMARY KEY,                -- a pseudonym, never a name
    team        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'Europe/Oslo',
    overrides   jsonb NOT NULL DEFAULT '{}',      -- care plan: rule id -> parameters
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX residents_team ON residents (team);

CREATE TABLE devices (
    id          text PRIMARY KEY,                -- also the device's MQTT user name
    resident    text NOT NULL REFERENCES residents (id),
    kind        text NOT NULL,
    room        text,
    heartbeat   interval NOT NULL DEFAULT '5 minutes',
    last_seen   timestamptz,
    battery     real,
    online      boolean,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_resident ON devices (resident);

-- Every valid event, keyed so that re-delivery is harmless.
CREATE TABLE events (
    time        timestamptz NOT NULL,            -- when the device observed it
    device      text NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    resident    text NOT NULL,
    value       double precision,
    room        text,
    lat         double precision,
    lon         double precision,
    received_at timestamptz NOT NULL,
    late        boolean NOT NULL DEFAULT false,  -- beyond the rules' allowed lateness: stored, not evaluated
    UNIQUE (device, event_id, time)
);
CREATE INDEX events_resident_time ON events (resident, time DESC);

DO $$
BEGIN
    IF current_setting('trygg.timescaledb', true) = 'on' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable('events', 'time', chunk_time_interval => interval '1 day');
    ELSE
        CREATE INDEX events_time ON events (time);
    END IF;
END
$$;

-- Anything that was not a valid event for a known device.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    device      text
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);

CREATE TABLE alerts (
    id                uuid PRIMARY KEY,
    resident          text NOT NULL,
    team              text NOT NULL,
    rule              text NOT NULL,
    catalogue_version text NOT NULL,
    code              text NOT NULL,
    severity          text NOT NULL CHECK (severity IN ('green', 'yellow', 'red')),
    events            text[] NOT NULL DEFAULT '{}',
    device            text,
    title             text NOT NULL DEFAULT '',
    raised_at         timestamptz NOT NULL,
    state             text NOT NULL,
    repeat_count      integer NOT NULL DEFAULT 0,
    suppressed        boolean NOT NULL DEFAULT false,
    suppressed_reason text,
    flapping          boolean NOT NULL DEFAULT false,
    assignee          text,
    outcome           text,
    shadow            boolean NOT NULL DEFAULT false,
    version           integer NOT NULL DEFAULT 1,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_open ON alerts (team, raised_at DESC) WHERE state NOT IN ('resolved', 'cancelled');
CREATE INDEX alerts_resident ON alerts (resident, raised_at DESC);
CREATE INDEX alerts_raised ON alerts (raised_at);

-- The lifecycle: append-only, one row per step, each with its actor.
CREATE TABLE alert_records (
    id        bigserial PRIMARY KEY,
    alert_id  uuid NOT NULL REFERENCES alerts (id),
    step      text NOT NULL,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    note      text,
    data      jsonb NOT NULL DEFAULT '{}',
    prev_hash bytea,
    hash      bytea
);
CREATE INDEX alert_records_alert ON alert_records (alert_id, id);
CREATE INDEX alert_records_at ON alert_records (at);

-- Who read which resident's data, when and what.
CREATE TABLE access_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    role      text NOT NULL,
    action    text NOT NULL,
    resident  text,
    detail    jsonb NOT NULL DEFAULT '{}',
    prev_hash bytea,
    hash      bytea
);
CREATE INDEX access_log_resident ON access_log (resident, at);

-- Append-only means append-only: the application role cannot rewrite history.
CREATE FUNCTION trygg_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;
CREATE TRIGGER alert_records_append_only BEFORE UPDATE OR DELETE ON alert_records
    FOR EACH ROW EXECUTE FUNCTION trygg_append_only();
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION trygg_append_only();
