-- trygg schema 2: how far each runner's local spool has been written to the database.
--
-- The runner acknowledges an MQTT message once its events are in the local
-- spool (fsync'ed); a drainer then writes spool records to the database and
-- advances this checkpoint in the same transaction, so every spooled record
-- is applied exactly once even across crashes.
CREATE TABLE spool_checkpoint (
    spool      text PRIMARY KEY,      -- the runner's spool name (its MQTT client id)
    segment    bigint NOT NULL,
    "offset"   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
