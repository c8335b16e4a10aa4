-- The audit chain's head, kept beside the log by a trigger (no extra statement per batch):
-- records removed from the end of the log no longer match it.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_head_after_insert AFTER INSERT ON audit WHEN NEW.hash IS NOT NULL
BEGIN
    INSERT INTO audit_head (id, seq, hash) VALUES (1, NEW.seq, NEW.hash)
    ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
    WHERE excluded.seq > audit_head.seq;
END;
