-- Migration 4: dataset splits (`muscat split`, catalog/splits.py).
--
-- A split is named (`--name`, default 'default'); its definition says how it was made, and each
-- file it covers has one row saying which part (train, validation, test, or the names given)
-- it is in. The assignments are stored, not computed by a view: a group (an artist, an album,
-- an audio, with its near-duplicates) keeps the part it was given when files are added and the
-- split is made again; only groups new to it are placed.

CREATE TABLE split_definitions (
    name       VARCHAR   NOT NULL,  -- unique among rows (the code replaces a definition whole)
    by_key     VARCHAR   NOT NULL,  -- 'artist' | 'album' | 'audio'
    seed       BIGINT    NOT NULL,
    ratios     DOUBLE[]  NOT NULL,  -- fractions, summing to 1, in the order of `names`
    names      VARCHAR[] NOT NULL,  -- the parts, e.g. [train, validation, test]
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One row per split x file. `group_key` is the key of the file's group (its artist, album or
-- audio, as catalog/splits.py normalises it): kept so that later runs and people can see why
-- files went together. Rows of files gc removed are dropped by the next `muscat split`.
CREATE TABLE split_files (
    name      VARCHAR NOT NULL,
    file_id   BIGINT  NOT NULL,
    split     VARCHAR NOT NULL,
    group_key VARCHAR NOT NULL
);
