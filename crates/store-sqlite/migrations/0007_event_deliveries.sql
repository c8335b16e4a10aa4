-- The event outbox: one row per event and subscription, until delivered or dead-lettered.
CREATE TABLE event_delivery (
    id           TEXT PRIMARY KEY,
    subscription TEXT NOT NULL,
    state        TEXT NOT NULL,
    due          INTEGER NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX event_delivery_due ON event_delivery (state, due);
CREATE INDEX event_delivery_subscription ON event_delivery (subscription, state);
