-- Vault keys: one record per key name, one row per version (seq orders versions).
CREATE TABLE keys (
    vault TEXT NOT NULL,
    name  TEXT NOT NULL,
    data  TEXT NOT NULL,
    PRIMARY KEY (vault, name)
);

CREATE TABLE key_versions (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    vault   TEXT NOT NULL,
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    data    TEXT NOT NULL,
    UNIQUE (vault, name, version)
);
CREATE INDEX key_versions_by_key ON key_versions (vault, name, seq);
