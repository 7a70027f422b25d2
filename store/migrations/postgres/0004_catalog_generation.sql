-- Catalog search runs over an in-memory index in each process (see
-- store/src/catalog/index.rs). These keep every index in step with the table:
-- each change to what search reads takes the next number of one counter, and
-- the counter's row lock orders those numbers as the commits are ordered. A
-- reader that sees generation G has therefore seen every change numbered up
-- to G, and asks only for what is newer. `instance` names this database's
-- catalog, so an index built from another one (the database was recreated)
-- starts over.
CREATE TABLE catalog_generation (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    instance TEXT NOT NULL,
    gen BIGINT NOT NULL
);
INSERT INTO catalog_generation (singleton, instance, gen)
    VALUES (TRUE, md5(random()::text || clock_timestamp()::text), 0);

ALTER TABLE simulations ADD COLUMN change_gen BIGINT NOT NULL DEFAULT 0;
CREATE INDEX simulations_change_gen ON simulations (change_gen);

-- Deleted simulations, so that indexes drop them.
CREATE TABLE catalog_deletions (
    simulation_id BIGINT NOT NULL,
    change_gen BIGINT NOT NULL
);
CREATE INDEX catalog_deletions_gen ON catalog_deletions (change_gen);

CREATE FUNCTION simcache_catalog_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    g BIGINT;
BEGIN
    UPDATE catalog_generation SET gen = gen + 1 RETURNING gen INTO g;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO catalog_deletions (simulation_id, change_gen) VALUES (OLD.id, g);
        RETURN OLD;
    END IF;
    NEW.change_gen := g;
    RETURN NEW;
END $$;

CREATE TRIGGER simulations_changed
    BEFORE INSERT OR UPDATE OF name, version, search_text, tags, status, created_at_ms
    ON simulations FOR EACH ROW EXECUTE FUNCTION simcache_catalog_changed();
CREATE TRIGGER simulations_deleted
    AFTER DELETE ON simulations FOR EACH ROW EXECUTE FUNCTION simcache_catalog_changed();

-- The trigram index served the SQL search the in-memory index replaces.
DROP INDEX IF EXISTS simulations_search_trgm;
