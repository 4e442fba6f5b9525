-- trygg schema 11: versions of a district's overlay (issue 19, item 2;
-- docs/rules.md, "Versions per district").
--
-- A district's overlay (rules/districts/<district>.yaml) is versioned like the
-- whole catalogue: kind 'overlay', with the district it belongs to. Each
-- district has at most one active and at most one shadow overlay, beside the
-- one active catalogue (and at most one catalogue in shadow) as before. The
-- content stays immutable (the trigger now covers the district too) and every
-- change of status is a row of catalogue_history, which names the district.
--
-- No new table: trygg_apply_roles (0007), run after the migrations, keeps
-- catalogue_versions at SELECT, INSERT, UPDATE and catalogue_history
-- append-only for trygg_app.

ALTER TABLE catalogue_versions DROP CONSTRAINT catalogue_versions_kind_check;
ALTER TABLE catalogue_versions ADD CONSTRAINT catalogue_versions_kind_check
    CHECK (kind IN ('catalogue', 'care_plans', 'overlay'));
ALTER TABLE catalogue_versions ADD COLUMN district text;
ALTER TABLE catalogue_versions ADD CONSTRAINT catalogue_versions_district_check
    CHECK ((kind = 'overlay') = (district IS NOT NULL));

DROP INDEX catalogue_versions_one_active;
DROP INDEX catalogue_versions_one_shadow;
CREATE UNIQUE INDEX catalogue_versions_one_active
    ON catalogue_versions (kind, coalesce(district, '')) WHERE status = 'active';
CREATE UNIQUE INDEX catalogue_versions_one_shadow
    ON catalogue_versions (kind, coalesce(district, '')) WHERE status = 'shadow';

ALTER TABLE catalogue_history ADD COLUMN district text;

CREATE OR REPLACE FUNCTION trygg_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'catalogue version % is kept for ever: DELETE refused', OLD.version;
    END IF;
    IF (NEW.version, NEW.kind, NEW.files, NEW.created_at, NEW.author, NEW.reason, NEW.parent,
        NEW.district)
       IS DISTINCT FROM
       (OLD.version, OLD.kind, OLD.files, OLD.created_at, OLD.author, OLD.reason, OLD.parent,
        OLD.district) THEN
        RAISE EXCEPTION 'catalogue version % is immutable: only its status may change '
                        '(a changed catalogue is a new version)', OLD.version;
    END IF;
    RETURN NEW;
END
$$;
