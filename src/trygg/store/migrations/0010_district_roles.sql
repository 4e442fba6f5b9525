-- trygg schema 10: district-scoped roles (issue 19, item 4; docs/api.md,
-- "Roles").
--
-- A team leader, auditor or specialist may be scoped to one or more districts
-- instead of listing teams: it then sees the teams that are in those districts
-- (the table teams, migration 0009) at the moment it asks, so a team moved to
-- another district moves with it. An empty list is no district scope: care
-- staff and team leaders keep their teams, specialists and auditors keep
-- seeing every team, as before.
--
-- No foreign key (an array); `trygg users add --district` refuses a district
-- that is not stored. trygg_apply_roles (0007), run after the migrations,
-- keeps api_users' grants as they are.

ALTER TABLE api_users ADD COLUMN districts text[] NOT NULL DEFAULT '{}';
