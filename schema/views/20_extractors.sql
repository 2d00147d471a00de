-- feature_units: every declared output, with its unit and normal range (contract).
-- Generated from the extractors' declarations; `kind` is scalar, categorical or vector.
CREATE OR REPLACE VIEW feature_units AS
SELECT feature, extractor, unit, min, max, description, kind, size
FROM extractor_outputs
ORDER BY extractor, position;

-- shown_runs: for each audio (or file, for file-scoped extractors) and extractor, the ok run
-- whose values the feature views show: the current identity's run when there is one, else the
-- newest older run, flagged `current = false` (its values are then shown as stale), so that
-- values never vanish between an upgrade and the recomputation.
CREATE OR REPLACE VIEW shown_runs AS
SELECT * EXCLUDE (rank)
FROM (
    SELECT r.run_id, r.audio_id, r.file_id, r.extractor, r.version, r.params_hash, r.input,
           r.finished_at, c.scope,
           (r.version = c.version AND r.params_hash = c.params_hash) AS current,
           row_number() OVER (
               PARTITION BY r.extractor,
                            CASE WHEN c.scope = 'file' THEN r.file_id::VARCHAR ELSE r.audio_id END
               ORDER BY (r.version = c.version AND r.params_hash = c.params_hash) DESC,
                        r.finished_at DESC, r.run_id DESC
           ) AS rank
    FROM runs r
    JOIN extractor_current c USING (extractor)
    WHERE r.status = 'ok'
)
WHERE rank = 1;

-- shown_runs joined to the present files they describe: audio-scoped runs to every file
-- holding that audio, file-scoped runs (probe) to their own file.
CREATE OR REPLACE VIEW shown_file_runs AS
SELECT l.path, l.file_id, s.* EXCLUDE (file_id)
FROM shown_runs s JOIN library l ON l.audio_id = s.audio_id
WHERE s.scope = 'audio'
UNION ALL
SELECT l.path, l.file_id, s.* EXCLUDE (file_id)
FROM shown_runs s JOIN library l ON l.file_id = s.file_id
WHERE s.scope = 'file';

-- features: one row per present file x scalar or categorical feature (contract).
-- `value` holds numbers, `text` categorical values (key, scale, codec); `stale` marks values
-- from an older extractor identity, shown until the current one has run.
CREATE OR REPLACE VIEW features AS
SELECT s.path, s.audio_id, s.extractor, s.version, v.feature, v.value, v.text, o.unit,
       NOT s.current AS stale
FROM shown_file_runs s
JOIN feature_values v USING (run_id)
LEFT JOIN extractor_outputs o ON o.extractor = s.extractor AND o.feature = v.feature;

-- feature_vectors: one row per present file x vector feature (contract). Vectors of varying
-- length (beat times) are FLOAT[]; fixed-size ones keep their declared length.
CREATE OR REPLACE VIEW feature_vectors AS
SELECT s.path, s.audio_id, s.extractor, s.version, v.feature, v.vector, NOT s.current AS stale
FROM shown_file_runs s
JOIN feature_vector_values v USING (run_id);

-- pending: work that has not run yet (contract): files to probe (never probed, or changed
-- since), then, per audio, each enabled and available extractor without a run of its current
-- identity. A failed run counts as run: see `failed`, and `muscat extract --retry-failed`.
CREATE OR REPLACE VIEW pending AS
SELECT f.audio_id, l.path, 'probe' AS extractor
FROM files f JOIN library l USING (file_id)
WHERE f.probed_at IS NULL OR f.changed_at > f.probed_at
UNION ALL
SELECT a.audio_id, a.path, c.extractor
FROM (
    SELECT l.audio_id, min(l.path) AS path
    FROM library l JOIN files f USING (file_id)
    WHERE l.audio_id IS NOT NULL AND f.changed_at <= f.probed_at
    GROUP BY l.audio_id
) a
CROSS JOIN extractor_current c
WHERE c.scope = 'audio' AND c.enabled AND c.available
  AND NOT EXISTS (
      SELECT 1 FROM runs r
      WHERE r.audio_id = a.audio_id AND r.extractor = c.extractor
        AND r.version = c.version AND r.params_hash = c.params_hash
  );

-- failed: runs of the current identities that failed, per present file (contract).
CREATE OR REPLACE VIEW failed AS
SELECT l.path, r.audio_id, r.extractor, r.version, r.error, r.attempts
FROM runs r
JOIN extractor_current c USING (extractor, version, params_hash)
JOIN library l ON l.audio_id = r.audio_id
WHERE r.status = 'failed' AND c.scope = 'audio'
UNION ALL
SELECT l.path, r.audio_id, r.extractor, r.version, r.error, r.attempts
FROM runs r
JOIN extractor_current c USING (extractor, version, params_hash)
JOIN library l ON l.file_id = r.file_id
WHERE r.status = 'failed' AND c.scope = 'file';

-- feature_stats: statistics over current results (contract), each audio counted once (each
-- file, for file-scoped extractors): one row per scalar feature and one per element of each
-- fixed-size vector feature (`chroma[C]`, `mfcc_mean[0]`, ...).
CREATE OR REPLACE VIEW feature_stats AS
WITH present_runs AS (
    SELECT DISTINCT run_id, extractor FROM shown_file_runs WHERE current
),
scalars AS (
    SELECT o.extractor, o.position, 0 AS element, v.feature, o.unit, v.value AS x
    FROM feature_values v
    JOIN present_runs USING (run_id)
    JOIN extractor_outputs o ON o.extractor = present_runs.extractor AND o.feature = v.feature
    WHERE o.kind = 'scalar'
),
elements AS (
    SELECT extractor, position, i AS element,
           feature || '[' || coalesce(labels[i], (i - 1)::VARCHAR) || ']' AS feature, unit, x
    FROM (
        SELECT o.extractor, o.position, o.labels, v.feature, o.unit,
               unnest(v.vector) AS x, unnest(generate_series(1, len(v.vector))) AS i
        FROM feature_vector_values v
        JOIN present_runs USING (run_id)
        JOIN extractor_outputs o ON o.extractor = present_runs.extractor AND o.feature = v.feature
        WHERE o.kind = 'vector' AND o.size IS NOT NULL
    )
)
SELECT feature, unit, count(x) AS count, avg(x) AS mean, stddev_samp(x) AS std,
       min(x) AS min, max(x) AS max
FROM (SELECT * FROM scalars UNION ALL SELECT * FROM elements)
GROUP BY extractor, position, element, feature, unit
ORDER BY extractor <> 'probe', extractor, position, element;
