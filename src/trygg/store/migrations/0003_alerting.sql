-- trygg schema 3: alerting -- full alert snapshots, ordered lifecycle records,
-- silences, the notification outbox and every delivery attempt, API users.
--
-- The alert service (trygg.runner.alerting) is the one writer of alerts. It
-- writes through the runner's spool, so every statement it needs is
-- idempotent: records are unique by (alert_id, seq), snapshots are upserted
-- by id and never replaced by an older version.

-- The snapshot of trygg.alerts.Alert.to_dict(), plus the columns the API
-- filters on. `version` is the number of lifecycle records.
ALTER TABLE alerts
    ADD COLUMN snapshot         jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN acknowledged_by  text,
    ADD COLUMN cancel_reason    text,
    ADD COLUMN closed_at        timestamptz,
    ADD COLUMN escalation_level integer NOT NULL DEFAULT 0,
    ADD COLUMN held_until       timestamptz,
    ADD COLUMN silence_id       text;
CREATE INDEX alerts_closed ON alerts (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX alerts_rule ON alerts (rule, raised_at DESC);

-- Records get their position in the alert (0 = raised); the fold of an
-- alert's records in seq order is the alert.
ALTER TABLE alert_records ADD COLUMN seq integer;
ALTER TABLE alert_records DISABLE TRIGGER alert_records_append_only;
UPDATE alert_records r SET seq = n.seq
  FROM (SELECT id, (row_number() OVER (PARTITION BY alert_id ORDER BY id) - 1)::integer AS seq
          FROM alert_records) n
 WHERE r.id = n.id;
ALTER TABLE alert_records ENABLE TRIGGER alert_records_append_only;
CREATE UNIQUE INDEX alert_records_alert_seq ON alert_records (alert_id, seq);

-- Silences: a resident (away, in hospital) or a device (in service).
CREATE TABLE silences (
    id          text PRIMARY KEY,
    scope       text NOT NULL CHECK (scope IN ('resident', 'device')),
    target      text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_by  text NOT NULL,
    reason      text NOT NULL,
    rules       text[] NOT NULL DEFAULT '{}',
    ended_by    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX silences_ends ON silences (ends_at);

-- The outbox: every notification an escalation step called for, keyed by its
-- idempotency key (alert:action:level:n:channel:address).
CREATE TABLE alert_notifications (
    key         text PRIMARY KEY,
    alert_id    uuid NOT NULL REFERENCES alerts (id),
    action      text NOT NULL,
    level       integer NOT NULL,
    n           integer NOT NULL,
    target      text NOT NULL,
    recipient   text NOT NULL,
    channel     text NOT NULL,
    address     text NOT NULL,
    due_at      timestamptz NOT NULL,
    digest      boolean NOT NULL DEFAULT false
);
CREATE INDEX alert_notifications_alert ON alert_notifications (alert_id);

-- Every delivery of a notification: channel, attempts, outcome (append-only).
CREATE TABLE alert_deliveries (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL,
    alert_id    uuid NOT NULL,
    channel     text NOT NULL,
    address     text NOT NULL,
    at          timestamptz NOT NULL,
    attempts    integer NOT NULL,
    ok          boolean NOT NULL,
    status      integer,
    error       text,
    latency_ms  double precision
);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id, at);
CREATE INDEX alert_deliveries_key ON alert_deliveries (key);
CREATE TRIGGER alert_deliveries_append_only BEFORE UPDATE OR DELETE ON alert_deliveries
    FOR EACH ROW EXECUTE FUNCTION trygg_append_only();

-- People and systems that use the HTTP API. Only a hash of the token is kept.
CREATE TABLE api_users (
    name        text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('care_staff', 'specialist', 'auditor', 'admin')),
    teams       text[] NOT NULL DEFAULT '{}',
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
