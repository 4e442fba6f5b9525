-- trygg schema 12: who sends an alarm's first notification (issue 17, item 1;
-- docs/distributed.md, "The relay").
--
-- A bridge's relay pages an immediate alarm itself when no worker has delivered
-- it within a second (the workers rebalancing or dead); the worker's notify agent
-- reaches the same notification later. One row per notification key (level 1,
-- the key the notification carries) says who sends it: the first to insert the
-- row does. 'sent' is false while a relay is paging: a worker that finds such a
-- row older than the lease takes it over (a relay that died between its claim
-- and its page). Housekeeping, not the trail: the deliveries are recorded in
-- alert_deliveries as before, and rows older than a day are deleted
-- (trygg_apply_roles gives trygg_app full DML, as on any state table).

CREATE TABLE notification_claims (
    key       text PRIMARY KEY,
    alert_id  uuid NOT NULL,
    by        text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    sent      boolean NOT NULL
);
CREATE INDEX notification_claims_at ON notification_claims (at);
CREATE INDEX notification_claims_alert ON notification_claims (alert_id);
