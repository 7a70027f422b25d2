-- Catalog search runs over an in-memory index in each process (see
-- store/src/catalog/index.rs). These keep every index in step with the table:
-- each change to what search reads takes the next number of one counter
-- (SQLite runs one writer at a time, so the numbers follow the commits). A
-- reader that sees generation G has seen every change numbered up to G, and
-- asks only for what is newer. `instance` names this database's catalog, so
-- an index built from another one (the file was replaced) starts over.
CREATE TABLE catalog_generation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    instance TEXT NOT NULL,
    gen INTEGER NOT NULL
);
INSERT INTO catalog_generation (singleton, instance, gen)
    VALUES (1, lower(hex(randomblob(16))), 0);

ALTER TABLE simulations ADD COLUMN change_gen INTEGER NOT NULL DEFAULT 0;
CREATE INDEX simulations_change_gen ON simulations (change_gen);

-- Deleted simulations, so that indexes drop them.
CREATE TABLE catalog_deletions (
    simulation_id INTEGER NOT NULL,
    change_gen INTEGER NOT NULL
);
CREATE INDEX catalog_deletions_gen ON catalog_deletions (change_gen);

CREATE TRIGGER simulations_inserted AFTER INSERT ON simulations
BEGIN
    UPDATE catalog_generation SET gen = gen + 1;
    UPDATE simulations SET change_gen = (SELECT gen FROM catalog_generation) WHERE id = NEW.id;
END;

CREATE TRIGGER simulations_changed
    AFTER UPDATE OF name, version, search_text, tags, status, created_at_ms ON simulations
BEGIN
    UPDATE catalog_generation SET gen = gen + 1;
    UPDATE simulations SET change_gen = (SELECT gen FROM catalog_generation) WHERE id = NEW.id;
END;

CREATE TRIGGER simulations_deleted AFTER DELETE ON simulations
BEGIN
    UPDATE catalog_generation SET gen = gen + 1;
    INSERT INTO catalog_deletions (simulation_id, change_gen)
        SELECT OLD.id, gen FROM catalog_generation;
END;
