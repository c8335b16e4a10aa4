-- Coffer metadata, schema version 1.
-- Identifiers are stored twice: as given (inside the JSON `data`) and lower-cased (the keys),
-- because ARM compares ids case-insensitively.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE principals (
    object_id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT UNIQUE,
    username  TEXT UNIQUE,
    data      TEXT NOT NULL
);

CREATE TABLE subscriptions (
    id   TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);

CREATE TABLE resource_groups (
    sub  TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (sub, name)
);

CREATE TABLE resources (
    id    TEXT PRIMARY KEY NOT NULL,
    type  TEXT NOT NULL,
    sub   TEXT NOT NULL,
    rg    TEXT,
    name  TEXT NOT NULL,
    data  TEXT NOT NULL
);
CREATE INDEX resources_by_sub ON resources (sub, rg, type);
CREATE INDEX resources_by_name ON resources (type, name);

CREATE TABLE role_assignments (
    scope        TEXT NOT NULL,
    name         TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    data         TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE INDEX role_assignments_by_principal ON role_assignments (principal_id);

CREATE TABLE audit (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    data TEXT NOT NULL
);
