-- Blocks staged with Put Block, until Put Block List commits them or they expire.
CREATE TABLE staged_blocks (
    account   TEXT NOT NULL,
    container TEXT NOT NULL,
    blob      TEXT NOT NULL,
    block_id  TEXT NOT NULL,
    created   INTEGER NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (account, container, blob, block_id)
);
CREATE INDEX staged_blocks_by_age ON staged_blocks (created);
