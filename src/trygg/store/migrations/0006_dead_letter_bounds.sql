-- trygg schema 6: a dead letter keeps at most the first 64 KiB of its payload,
-- with the size and SHA-256 of the whole.
--
-- A 5 MB message was kept whole, in every process it passed through and in
-- this table; now the decoder refuses anything above its payload limit
-- (256 KiB by default) unread, and a dead letter keeps the payload's head for
-- a person to look at, its size to say how large it was, and its hash to
-- recognise the same payload sent again. Rows from before this schema keep
-- the payload they had; their size and hash are computed from it here.
ALTER TABLE dead_letters
    ADD COLUMN payload_size   bigint,
    ADD COLUMN payload_sha256 bytea;
UPDATE dead_letters SET payload_size = length(payload), payload_sha256 = sha256(payload);
ALTER TABLE dead_letters
    ALTER COLUMN payload_size SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL;
