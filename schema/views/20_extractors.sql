-- feature_units: every declared output, with its unit and normal range (contract).
-- Generated from the extractors' declarations; `kind` is scalar, categorical or vector.
CREATE OR REPLACE VIEW feature_units AS
SELECT feature, extractor, unit, min, max, description, kind, size
FROM extractor_outputs
ORDER BY extractor, position;

-- shown_runs: for each subject (the audio, or the file for file-scoped extractors: run_subject
-- in 00_macros.sql) and extractor, the ok run whose values the feature views show: the current
-- identity's run when there is one, else the newest older run, so that values never vanish
-- between an upgrade and the recomputation.
-- `current` is false when the run is of an older identity, or was computed from another input
-- than the audio has now (hpcp on the mix, while stems exist): its values are then stale.
CREATE OR REPLACE VIEW shown_runs AS
WITH upstream AS (  -- results each audio has now, named as the runs that read them record them
    SELECT r.audio_id, c.extractor AS upstream,
           c.extractor || ':' || c.version || ':' || c.params_hash AS input
    FROM runs r JOIN extractor_current c USING (extractor, version, params_hash)
    WHERE r.status = 'ok' AND r.audio_id IS NOT NULL
),
ranked AS (
    SELECT r.run_id, r.audio_id, r.file_id, r.extractor, r.version, r.params_hash, r.input,
           r.finished_at, c.scope, c.uses, c.version AS current_version,
           (r.version = c.version AND r.params_hash = c.params_hash) AS same_identity,
           row_number() OVER (
               PARTITION BY r.extractor, run_subject(c.scope, r.file_id, r.audio_id)
               ORDER BY (r.version = c.version AND r.params_hash = c.params_hash) DESC,
                        r.finished_at DESC, r.run_id DESC
           ) AS rank
    FROM runs r
    JOIN extractor_current c USING (extractor)
    WHERE r.status = 'ok'
),
expected AS (
    SELECT k.run_id, coalesce(min(u.input), 'mix') AS expected_input
    FROM ranked k
    LEFT JOIN upstream u ON u.audio_id = k.audio_id AND list_contains(k.uses, u.upstream)
    WHERE k.rank = 1
    GROUP BY k.run_id
)
SELECT k.run_id, k.audio_id, k.file_id, k.extractor, k.version, k.params_hash, k.input,
       k.finished_at, k.scope, k.current_version, k.same_identity, e.expected_input,
       k.same_identity AND coalesce(k.input, 'mix') = e.expected_input AS current
FROM ranked k JOIN expected e USING (run_id)
WHERE k.rank = 1;

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

-- pending: work that has never run (contract): files to probe (never probed, or changed
-- since), then, per audio, each enabled and available extractor with no result in any version.
-- Results of an older version are `stale` instead (`muscat reindex`); a failed run of the
-- current identity counts as run (see `failed`, and `muscat extract --retry-failed`).
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
  AND NOT has_counted_run(a.audio_id, c.extractor, c.version, c.params_hash);

-- stale: results shown from an older extractor identity or from an outdated input (contract),
-- per present file, with why: `version` (the extractor's version changed), `params` (an
-- effective parameter changed), `weights` (the model file changed: same parameters, another
-- fingerprint), `input` (what it read changed, e.g. stems now exist). `muscat reindex` redoes
-- them; until then their values stay visible with stale = true.
CREATE OR REPLACE VIEW stale AS
SELECT s.audio_id, s.path, s.extractor, s.version, s.current_version,
       CASE WHEN s.version <> s.current_version THEN 'version'
            WHEN NOT s.same_identity AND old.params = new.params THEN 'weights'
            WHEN NOT s.same_identity THEN 'params'
            ELSE 'input'
       END AS reason
FROM shown_file_runs s
JOIN extractor_current c USING (extractor)
LEFT JOIN extractor_identities old
       ON old.extractor = s.extractor AND old.version = s.version AND old.params_hash = s.params_hash
LEFT JOIN extractor_identities new
       ON new.extractor = c.extractor AND new.version = c.version AND new.params_hash = c.params_hash
WHERE NOT s.current AND c.enabled AND c.available;

-- failed: runs of the current identities that failed, per present file (contract).
CREATE OR REPLACE VIEW failed AS
SELECT l.path, r.audio_id, r.extractor, r.version, r.error, r.attempts, r.host
FROM runs r
JOIN extractor_current c USING (extractor, version, params_hash)
JOIN library l ON l.audio_id = r.audio_id
WHERE r.status = 'failed' AND c.scope = 'audio'
UNION ALL
SELECT l.path, r.audio_id, r.extractor, r.version, r.error, r.attempts, r.host
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

-- feature_stats_by_version: scalar feature statistics per extractor identity side by side, over
-- present audio (each counted once per identity), to judge drift before switching to a new
-- version. `current` marks the identity in use now.
CREATE OR REPLACE VIEW feature_stats_by_version AS
WITH present AS (
    SELECT DISTINCT audio_id FROM library WHERE audio_id IS NOT NULL
),
latest AS (  -- the newest ok run per subject and identity
    SELECT * FROM (
        SELECT r.run_id, r.extractor, r.version, r.params_hash,
               row_number() OVER (
                   PARTITION BY r.extractor, r.version, r.params_hash,
                                run_subject(c.scope, r.file_id, r.audio_id)
                   ORDER BY r.finished_at DESC, r.run_id DESC
               ) AS rank
        FROM runs r JOIN extractor_current c USING (extractor)
        WHERE r.status = 'ok' AND r.audio_id IN (SELECT audio_id FROM present)
    )
    WHERE rank = 1
)
SELECT v.feature, l.extractor, l.version, l.params_hash,
       (l.version = c.version AND l.params_hash = c.params_hash) AS current,
       o.unit, count(v.value) AS count, avg(v.value) AS mean, stddev_samp(v.value) AS std,
       min(v.value) AS min, max(v.value) AS max
FROM latest l
JOIN feature_values v USING (run_id)
JOIN extractor_current c ON c.extractor = l.extractor
LEFT JOIN extractor_outputs o ON o.extractor = l.extractor AND o.feature = v.feature
WHERE v.text IS NULL
GROUP BY ALL
ORDER BY v.feature, l.version, l.params_hash;

-- artifacts: files produced for present audio (contract), e.g. demucs stems; `artifact` is the
-- produced file, `path` the library file whose audio it belongs to.
CREATE OR REPLACE VIEW artifacts AS
SELECT s.path, s.audio_id, s.extractor, s.version, a.kind, a.format, a.bytes, a.path AS artifact,
       NOT s.current AS stale
FROM shown_file_runs s
JOIN run_artifacts a USING (run_id);
