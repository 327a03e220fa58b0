-- A demo on-premises application's user table: the SQL connector's downstream target in
-- the `targets` compose profile.
CREATE TABLE app_users (
    id           TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL UNIQUE,
    display_name TEXT,
    email        TEXT,
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE app_groups (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL UNIQUE
);
CREATE TABLE app_group_members (
    group_id TEXT NOT NULL REFERENCES app_groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES app_users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
