-- Migration 3: tags, read with mutagen (catalog/tags.py).
--
-- Tags are read for new and changed files only: `tags_read_at` says when a file's tags were
-- last read, and a file whose `changed_at` is later (or that was never read: every file of a
-- catalogue from before this migration) has its tags read by the next scan of its folder.

ALTER TABLE files ADD COLUMN tags_read_at TIMESTAMP;
-- 'tags: ...' when its tags could not be parsed at the last read (also in scan_problems).
ALTER TABLE files ADD COLUMN tags_error VARCHAR;
-- The first value of the tags `library` shows, written with `file_tags` (the same transaction):
-- kept on `files` so that `library`, which every feature view reads, needs no aggregation.
-- Track and disc numbers as integers ('3/12' is 3; NULL when not a number).
ALTER TABLE files ADD COLUMN artist VARCHAR;
ALTER TABLE files ADD COLUMN album VARCHAR;
ALTER TABLE files ADD COLUMN albumartist VARCHAR;
ALTER TABLE files ADD COLUMN title VARCHAR;
ALTER TABLE files ADD COLUMN genre VARCHAR;
ALTER TABLE files ADD COLUMN date VARCHAR;
ALTER TABLE files ADD COLUMN track_number INTEGER;
ALTER TABLE files ADD COLUMN disc_number INTEGER;

-- Every tag of every file: one row per value. Keys are lowercased as mutagen's easy interfaces
-- name them (artist, tracknumber, musicbrainz_trackid, ...); `ordinal` is the value's place
-- among the file's values of that key (0 first). Kept for missing files until gc removes them.
CREATE TABLE file_tags (
    file_id BIGINT  NOT NULL,
    key     VARCHAR NOT NULL,
    ordinal INTEGER NOT NULL,
    value   VARCHAR NOT NULL
);
