-- trygg schema 8: sign-in fit for a phone (issue 16, item 3; docs/api.md,
-- "Sign-in"). A team leader enrols a phone with a one-time code (link or QR
-- code), which the phone exchanges once for a device session; staff of a
-- municipality with an identity provider sign in through OpenID Connect and
-- get a session too. The console holds the session's secret in an HttpOnly
-- cookie; only a SHA-256 of codes and secrets is stored, as for tokens.
--
-- These tables are state, not the trail: a session is revoked by UPDATE, and
-- old rows are removed (trygg_apply_roles gives trygg_app full DML on them,
-- as on api_users). What happened to them (enrolment, exchange, sign-in,
-- revocation) is written to the append-only access_log.

-- The team leader: care staff of its teams who may also enrol and revoke the
-- phones of its teams' staff.
ALTER TABLE api_users DROP CONSTRAINT IF EXISTS api_users_role_check;
ALTER TABLE api_users ADD CONSTRAINT api_users_role_check
    CHECK (role IN ('care_staff', 'team_leader', 'specialist', 'auditor', 'admin'));
-- A user who only ever signs in on an enrolled phone or through the identity
-- provider has no bearer token.
ALTER TABLE api_users ALTER COLUMN token_hash DROP NOT NULL;
-- Who created the row: 'cli' (trygg users add / enrol), 'api' (a team
-- leader's enrolment), 'oidc' (provisioned from the identity provider's claims).
ALTER TABLE api_users ADD COLUMN source text NOT NULL DEFAULT 'cli';

CREATE TABLE api_enrolments (
    id         uuid PRIMARY KEY,
    code_hash  text NOT NULL UNIQUE,
    user_name  text NOT NULL REFERENCES api_users (name) ON DELETE CASCADE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    session_id uuid,
    CHECK (expires_at > created_at)
);

CREATE TABLE api_sessions (
    id          uuid PRIMARY KEY,              -- shown and revoked by; not the secret
    secret_hash text NOT NULL UNIQUE,          -- SHA-256 of the cookie's secret
    user_name   text NOT NULL REFERENCES api_users (name) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('enrolled', 'oidc', 'token')),
    label       text NOT NULL DEFAULT '',      -- the device, from its User-Agent
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoked_by  text,
    -- kind 'token': the bearer token the console signed in with; the session
    -- ends when that token is replaced (trygg users add) or disabled.
    token_hash  text,
    CHECK (expires_at > created_at)
);
CREATE INDEX api_sessions_user ON api_sessions (user_name, expires_at);
