-- library: one row per file that is present now (contract).
-- `path` is absolute. The audio columns stay NULL until the probe extractor has decoded the
-- file; `mtime` is the file's modification time in UTC. The tag columns hold each tag's first
-- value, read with mutagen by the scan that found the file new or changed (NULL before, and
-- when the file has no such tag); track and disc numbers are integers ('3/12' is 3, NULL when
-- not a number). Every tag, with all its values, is in `tags`.
CREATE OR REPLACE VIEW library AS
SELECT
    r.path || '/' || CASE WHEN f.dir = '' THEN f.name ELSE f.dir || '/' || f.name END AS path,
    r.path                                 AS root,
    f.audio_id,
    f.size,
    make_timestamp(f.mtime_ns // 1000)     AS mtime,
    a.duration_s,
    a.sample_rate,
    a.channels,
    f.codec,
    f.artist,
    f.album,
    f.albumartist,
    f.title,
    f.genre,
    f.date,
    f.track_number,
    f.disc_number,
    f.file_id
FROM files AS f
JOIN roots AS r USING (root_id)
LEFT JOIN audio AS a USING (audio_id)
WHERE f.status = 'present';

-- tags: every tag of every present file, one row per value (contract). Keys are lowercased as
-- mutagen's easy interfaces name them (artist, album, tracknumber, musicbrainz_trackid, ...;
-- see catalog/tags.py for each container); several values of a key are several rows, and
-- `ordinal` is the value's place among them (0 first).
CREATE OR REPLACE VIEW tags AS
SELECT l.path, l.audio_id, t.key, t.value, t.ordinal, l.file_id
FROM file_tags AS t
JOIN library AS l USING (file_id);

-- splits: the part of each present file in each named split (contract; `muscat split`).
-- `track_features.split` is the part in the split named 'default'.
CREATE OR REPLACE VIEW splits AS
SELECT s.name, l.path, l.audio_id, s.split, s.group_key, l.file_id
FROM split_files AS s
JOIN library AS l USING (file_id);
