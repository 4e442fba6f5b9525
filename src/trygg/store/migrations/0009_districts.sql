-- trygg schema 9: districts (issue 19, item 1; docs/rules.md, "Districts").
--
-- A team belongs to a district (bydel); a resident belongs to a team
-- (residents.team, as before). A team with no row here, or a registry without
-- districts, is in the district 'default', so installations that never name a
-- district keep working: all their teams in one district.
--
-- Registry tables, not the trail: `trygg registry load` inserts and updates
-- them (trygg_apply_roles, run after the migrations, gives trygg_app SELECT,
-- INSERT, UPDATE, DELETE as on residents, and the reporting views below to
-- trygg_reader).

CREATE TABLE districts (
    id          text PRIMARY KEY,                -- lower case, also the overlay's file name
    name        text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO districts (id) VALUES ('default');

CREATE TABLE teams (
    id          text PRIMARY KEY,
    district    text NOT NULL DEFAULT 'default' REFERENCES districts (id),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX teams_district ON teams (district);
INSERT INTO teams (id) SELECT DISTINCT team FROM residents ON CONFLICT DO NOTHING;

CREATE VIEW reporting.districts AS SELECT id, name, updated_at FROM public.districts;
CREATE VIEW reporting.teams AS SELECT id, district, updated_at FROM public.teams;
