-- Blob containers and committed blobs. Names are case-sensitive for blobs (as in Azure);
-- container names are lower-case by rule. Keys are byte-exact.
CREATE TABLE containers (
    account TEXT NOT NULL,
    name    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (account, name)
);

CREATE TABLE blobs (
    account   TEXT NOT NULL,
    container TEXT NOT NULL,
    name      TEXT NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (account, container, name)
);
