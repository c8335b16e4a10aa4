-- Tamper-evident audit: each record carries its chain hash; each committed batch ends with a
-- signed checkpoint of the chain head (see coffer_domain::audit::chain).
ALTER TABLE audit ADD COLUMN hash TEXT;
CREATE TABLE audit_checkpoint (
    seq  INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    time INTEGER NOT NULL,
    sig  TEXT NOT NULL
);
