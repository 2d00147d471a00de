-- Migration 2: extractors, their runs and the features they produced.
--
-- The identity of a result is (extractor, version, params_hash). `extractor_current` holds the
-- identity each extractor has now (rewritten by muscat whenever code or configuration change
-- it); a run with another identity is stale. Values live in long tables keyed by run, so a
-- new extractor needs no new column: the views in schema/views/ turn them into features.

-- Every extractor identity ever used, with its parameters for people to read.
CREATE TABLE extractor_identities (
    extractor   VARCHAR   NOT NULL,
    version     INTEGER   NOT NULL,
    params_hash VARCHAR   NOT NULL,
    params      VARCHAR   NOT NULL,   -- the effective parameters, as JSON text
    weights     VARCHAR,              -- fingerprint of the model weights (model-based extractors)
    first_used  TIMESTAMP NOT NULL
);

-- What each extractor is now: identity, device, whether it is switched on and can run.
CREATE TABLE extractor_current (
    extractor   VARCHAR NOT NULL,
    version     INTEGER NOT NULL,
    params_hash VARCHAR NOT NULL,
    device      VARCHAR NOT NULL,     -- 'cpu' | 'gpu'
    scope       VARCHAR NOT NULL,     -- 'audio' (results belong to the content) | 'file'
    enabled     BOOLEAN NOT NULL,
    available   BOOLEAN NOT NULL,
    reason      VARCHAR,              -- why it is not available (a missing model file, ...)
    uses        VARCHAR[] NOT NULL,   -- extractors whose results it reads when present (stems)
    updated_at  TIMESTAMP NOT NULL
);

-- Each declared output of each extractor, generated from the declarations (no second list).
CREATE TABLE extractor_outputs (
    extractor   VARCHAR NOT NULL,
    feature     VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,     -- 'scalar' | 'categorical' | 'vector'
    unit        VARCHAR NOT NULL,     -- '' when dimensionless
    min         DOUBLE,               -- the normal range
    max         DOUBLE,
    size        INTEGER,              -- vectors: fixed length (NULL when it varies)
    labels      VARCHAR[],            -- vectors: element names (chroma: C, C#, ...)
    description VARCHAR NOT NULL,
    position    INTEGER NOT NULL      -- declaration order, for listings
);

CREATE SEQUENCE run_ids START 1;

-- One row per audio (or, for file-scoped extractors such as probe, per file) x extractor
-- identity. Only finished work is recorded: a job interrupted midway leaves no row.
CREATE TABLE runs (
    run_id        BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
    audio_id      VARCHAR,            -- NULL for a probe that could not decode the file
    file_id       BIGINT,             -- the file that was decoded
    extractor     VARCHAR   NOT NULL,
    version       INTEGER   NOT NULL,
    params_hash   VARCHAR   NOT NULL,
    input         VARCHAR,            -- what it was computed from: 'mix', or the upstream result it
                                      -- read, as 'extractor:version:params_hash' (demucs stems)
    status        VARCHAR   NOT NULL, -- 'ok' | 'failed'
    attempts      INTEGER   NOT NULL,
    error         VARCHAR,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP NOT NULL,
    seconds       DOUBLE    NOT NULL, -- wall time of the extraction itself
    audio_seconds DOUBLE,             -- length of the audio it processed
    device        VARCHAR   NOT NULL,
    host          VARCHAR   NOT NULL
);

-- Scalar (value) and categorical (text) features of ok runs.
CREATE TABLE feature_values (
    run_id  BIGINT  NOT NULL,
    feature VARCHAR NOT NULL,
    value   DOUBLE,
    text    VARCHAR
);

-- Vector features of ok runs (fixed-size ones are cast to FLOAT[n] by the views).
CREATE TABLE feature_vector_values (
    run_id  BIGINT  NOT NULL,
    feature VARCHAR NOT NULL,
    vector  FLOAT[] NOT NULL
);

-- Files an ok run produced (demucs stems, MIDI of drum onsets), under artifacts_dir.
-- Written to a temporary name and renamed before the run is recorded: a listed artifact is
-- always complete.
CREATE TABLE run_artifacts (
    run_id BIGINT  NOT NULL,
    kind   VARCHAR NOT NULL,   -- 'stem:drums', 'stem:bass', ..., 'midi'
    format VARCHAR NOT NULL,   -- flac, mp3, ogg, wav, mid
    path   VARCHAR NOT NULL,   -- absolute
    bytes  BIGINT  NOT NULL
);
