-- library: one row per file that is present now (contract).
-- `path` is absolute. The audio columns stay NULL until the probe extractor has decoded the
-- file; `mtime` is the file's modification time in UTC.
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
    f.file_id
FROM files AS f
JOIN roots AS r USING (root_id)
LEFT JOIN audio AS a USING (audio_id)
WHERE f.status = 'present';
