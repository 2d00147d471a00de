-- Migration 1: the file catalogue (roots, files, directories) and the audio they hold.
--
-- Conventions for every migration:
-- * No foreign keys: DuckDB reports false violations on update and upsert. Relationships are
--   kept by the code and checked by catalog/integrity.py, which the tests run after every kind
--   of change (assert_intact in tests/conftest.py) and `muscat doctor` runs on a catalogue.
-- * Surrogate keys come from sequences (DuckDB has no SERIAL); 64-bit where they can grow.
-- * A migration runs inside one transaction; `schema_version` gets one row per migration.

CREATE TABLE schema_version (
    version        INTEGER   NOT NULL,
    applied_at     TIMESTAMP NOT NULL,
    muscat_version VARCHAR
);

-- Small key/value facts about the catalogue itself (e.g. the digest of the installed views).
CREATE TABLE catalog_meta (
    key   VARCHAR NOT NULL,
    value VARCHAR
);

CREATE SEQUENCE root_ids START 1;

-- A folder the user asked muscat to catalogue.
CREATE TABLE roots (
    root_id      INTEGER PRIMARY KEY DEFAULT nextval('root_ids'),
    path         VARCHAR   NOT NULL,  -- absolute, as the user named it (symlinks not resolved)
    added_at     TIMESTAMP NOT NULL,
    last_scan_at TIMESTAMP,
    -- 'ok', or why the last scan left the root alone ('offline: ...').
    last_scan_status VARCHAR
);

CREATE SEQUENCE file_ids START 1;

-- A path under a root. `(root_id, dir, name)` is unique among rows (checked by
-- catalog/integrity.py: "a path is catalogued twice").
-- Change detection uses the stat fields only; contents are read by extractors, not scans.
CREATE TABLE files (
    file_id   BIGINT PRIMARY KEY DEFAULT nextval('file_ids'),
    root_id   INTEGER NOT NULL,
    dir       VARCHAR NOT NULL,   -- folder relative to the root, '/'-separated, '' at the top
    name      VARCHAR NOT NULL,   -- invalid UTF-8 bytes appear as \xNN escapes
    raw_path  BLOB,               -- exact bytes of dir/name, only when not valid UTF-8
    size      UBIGINT NOT NULL,
    mtime_ns  BIGINT  NOT NULL,
    dev       UBIGINT NOT NULL,
    inode     UBIGINT NOT NULL,
    -- blake2b-128 of the first and last MiB: recognises a move across devices. Set when the
    -- content was read anyway (probing) or for move candidates; NULL otherwise.
    head_tail_hash VARCHAR,
    -- The content this path holds, once decoded (NULL before). Kept across changes and moves
    -- so that a retag whose sound did not change keeps its features.
    audio_id  VARCHAR,
    status    VARCHAR   NOT NULL,   -- 'present' | 'missing'
    codec     VARCHAR,              -- container/codec, once probed (wav, flac, mp3, aac, ...)
    probed_at TIMESTAMP,            -- last decode attempt; re-probed when changed_at is later
    first_seen    TIMESTAMP NOT NULL,
    changed_at    TIMESTAMP NOT NULL,  -- last time size/mtime/inode or the path changed
    missing_since TIMESTAMP
);

-- One row per folder that holds audio files: a fingerprint of its sorted listing
-- (name, size, mtime_ns, dev, inode of each audio file). A rescan only looks at the files
-- of folders whose fingerprint changed.
CREATE TABLE dirs (
    root_id     INTEGER NOT NULL,
    dir         VARCHAR NOT NULL,
    fingerprint BIGINT  NOT NULL,
    files       INTEGER NOT NULL
);

-- Decoded content, identified by a hash of its samples (filled by the probe extractor).
-- Two files may hold the same audio (a copy, or the same PCM as WAV and as FLAC).
CREATE TABLE audio (
    audio_id    VARCHAR PRIMARY KEY,
    duration_s  DOUBLE,
    sample_rate INTEGER,
    channels    INTEGER,
    first_seen  TIMESTAMP NOT NULL
);

-- What the last scan of each root could not handle (unreadable folders, broken links, ...).
-- Replaced for a root by each scan of it.
CREATE TABLE scan_problems (
    root_id INTEGER   NOT NULL,
    path    VARCHAR   NOT NULL,   -- absolute
    reason  VARCHAR   NOT NULL,
    seen_at TIMESTAMP NOT NULL
);
