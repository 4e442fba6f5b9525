-- trygg schema 5: versioned rule catalogues and care plans, shadow mode (issue 8).
--
-- catalogue_versions holds the content of every catalogue (and every set of
-- care plans) that was published, run in shadow or in use at start-up, keyed
-- by its version string (the catalogue's "<declared>+<hash>", or
-- "care-plans+<hash>"). Content is immutable: only the status may change.
-- catalogue_history is the append-only log of who changed what, when and why.

CREATE TABLE catalogue_versions (
    version    text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('catalogue', 'care_plans')),
    -- [{"name": "standard.yaml", "text": "..."}] in load order: order matters
    -- (later files override earlier ones, and it is part of the hash), and a
    -- jsonb object would not keep it.
    files      jsonb NOT NULL,
    status     text NOT NULL CHECK (status IN ('active', 'shadow', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    author     text NOT NULL,
    reason     text NOT NULL,
    parent     text REFERENCES catalogue_versions (version),
    status_at  timestamptz NOT NULL DEFAULT now()
);
-- One active version per kind; at most one catalogue in shadow.
CREATE UNIQUE INDEX catalogue_versions_one_active ON catalogue_versions (kind)
    WHERE status = 'active';
CREATE UNIQUE INDEX catalogue_versions_one_shadow ON catalogue_versions (kind)
    WHERE status = 'shadow';

CREATE FUNCTION trygg_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'catalogue version % is kept for ever: DELETE refused', OLD.version;
    END IF;
    IF (NEW.version, NEW.kind, NEW.files, NEW.created_at, NEW.author, NEW.reason, NEW.parent)
       IS DISTINCT FROM
       (OLD.version, OLD.kind, OLD.files, OLD.created_at, OLD.author, OLD.reason, OLD.parent) THEN
        RAISE EXCEPTION 'catalogue version % is immutable: only its status may change '
                        '(a changed catalogue is a new version)', OLD.version;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER catalogue_versions_immutable BEFORE UPDATE OR DELETE ON catalogue_versions
    FOR EACH ROW EXECUTE FUNCTION trygg_version_immutable();

CREATE TABLE catalogue_history (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    version  text NOT NULL REFERENCES catalogue_versions (version),
    kind     text NOT NULL,
    -- published | started (recorded at start-up) | shadow_started | shadow_stopped
    -- | promoted | care_plans_changed
    action   text NOT NULL,
    author   text NOT NULL,
    reason   text NOT NULL,
    previous text                  -- the version this one replaced, if any
);
CREATE INDEX catalogue_history_version ON catalogue_history (version, at);
CREATE TRIGGER catalogue_history_append_only BEFORE UPDATE OR DELETE ON catalogue_history
    FOR EACH ROW EXECUTE FUNCTION trygg_append_only();

-- The shadow report and the false-alarm figures read alerts by period.
CREATE INDEX alerts_shadow_raised ON alerts (shadow, raised_at);
