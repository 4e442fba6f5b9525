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

-- A writer that does not know the new columns (an older trygg process during a
-- rolling upgrade, a script, a test) still inserts: the size and hash are then
-- those of the payload it stores. Without this, such an insert fails, and a
-- drainer would retry its run forever.
CREATE FUNCTION trygg_dead_letter_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload_size IS NULL THEN
        NEW.payload_size := length(NEW.payload);
    END IF;
    IF NEW.payload_sha256 IS NULL THEN
        NEW.payload_sha256 := sha256(NEW.payload);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER dead_letters_digest BEFORE INSERT ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION trygg_dead_letter_digest();
