-- similarity_features: what `muscat similar` compares, per aspect (catalog/similarity.py).
-- timbre: the spectral extractor's frame statistics (shape, noisiness, band energies) and the
--   MFCCs' means and spreads; MFCC 0 is left out, as usual: it is the frame's log energy, so
--   it measures how loud a recording is, not how it sounds.
-- harmony: the 12 chroma shares, chroma entropy (tonal vs noisy), and the key, as a place on
--   the circle of fifths (see similarity_elements).
-- rhythm: tempo, onset rate and danceability. Left out: beat_count (it grows with the
--   duration), beat_interval_mean (60 / bpm), and what differs between encodings of one
--   recording more than between pieces on short tracks: beat_interval_std (the tracker's
--   jitter on a steady beat) and the BPM histogram's peak weights.
-- `element` NULL: a scalar; else the 1-based elements of a vector that count.
CREATE OR REPLACE VIEW similarity_features AS
SELECT * FROM (VALUES
    ('timbre', 'spectral', 'spectral_centroid_mean', NULL),
    ('timbre', 'spectral', 'spectral_spread_mean', NULL),
    ('timbre', 'spectral', 'spectral_skewness_mean', NULL),
    ('timbre', 'spectral', 'spectral_kurtosis_mean', NULL),
    ('timbre', 'spectral', 'spectral_rolloff_mean', NULL),
    ('timbre', 'spectral', 'spectral_flux_mean', NULL),
    ('timbre', 'spectral', 'spectral_flatness_mean', NULL),
    ('timbre', 'spectral', 'spectral_entropy_mean', NULL),
    ('timbre', 'spectral', 'spectral_complexity_mean', NULL),
    ('timbre', 'spectral', 'zero_crossing_rate_mean', NULL),
    ('timbre', 'spectral', 'dissonance_mean', NULL),
    ('timbre', 'spectral', 'pitch_salience_mean', NULL),
    ('timbre', 'spectral', 'energy_low', NULL),
    ('timbre', 'spectral', 'energy_low_mid', NULL),
    ('timbre', 'spectral', 'energy_high_mid', NULL),
    ('timbre', 'spectral', 'energy_high', NULL),
    ('timbre', 'spectral', 'mfcc_mean', generate_series(2, 13)),
    ('timbre', 'spectral', 'mfcc_std', generate_series(2, 13)),
    ('harmony', 'hpcp', 'chroma', generate_series(1, 12)),
    ('harmony', 'hpcp', 'chroma_entropy', NULL),
    ('harmony', 'key', 'key', NULL),
    ('rhythm', 'rhythm', 'bpm', NULL),
    ('rhythm', 'rhythm', 'onset_rate', NULL),
    ('rhythm', 'rhythm', 'danceability', NULL)
) AS t(aspect, extractor, feature, elements);

-- similarity_elements: one row per aspect x audio x element, the element standardised over
-- the library (z-score: minus the mean, over the population standard deviation), so that no
-- feature weighs more for its unit (Hz against shares). A value the audio lacks (NULL), or an
-- element that does not vary, counts as the mean: 0. An audio takes part in an aspect once it
-- has a result of each extractor the aspect reads (stale results too, as `features` shows
-- them); `aspect` 'all' is the three together, each scaled by 1/sqrt(its element count) so
-- that each weighs the same whatever its number of elements. The key (text) becomes two
-- numbers: the cosine and sine of its major key's place on the circle of fifths (a minor key
-- is placed at its relative major: A minor at C), so that near keys are near numbers; and
-- the scale one more (major 1, minor 0).
CREATE OR REPLACE VIEW similarity_elements AS
WITH wanted AS (
    SELECT aspect, extractor, feature, unnest(coalesce(elements, [NULL])) AS element
    FROM similarity_features
),
audio_scalars AS (  -- one value per audio (the files of one audio share their results)
    SELECT audio_id, extractor, feature, any_value(value) AS value, any_value(text) AS text
    FROM features WHERE audio_id IS NOT NULL
    GROUP BY ALL
),
audio_vectors AS (
    SELECT audio_id, extractor, feature, any_value(vector) AS vector
    FROM feature_vectors WHERE audio_id IS NOT NULL
    GROUP BY ALL
),
keys AS (
    SELECT k.audio_id,
           -- pitch class of the tonic, in either spelling Essentia uses; of the relative major
           -- for minor keys; then its step on the circle of fifths (7 semitones a step)
           ((coalesce(list_position(['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'], k.text),
                      list_position(['C', 'Db', 'D', 'Eb', 'E', 'F', 'Gb', 'G', 'Ab', 'A', 'Bb', 'B'], k.text)) - 1
             + CASE WHEN s.text = 'minor' THEN 3 ELSE 0 END) * 7) % 12 AS fifths,
           CASE WHEN s.text = 'major' THEN 1.0 WHEN s.text = 'minor' THEN 0.0 END AS major
    FROM audio_scalars k
    LEFT JOIN audio_scalars s ON s.audio_id = k.audio_id AND s.extractor = 'key' AND s.feature = 'scale'
    WHERE k.extractor = 'key' AND k.feature = 'key'
),
raw AS (
    SELECT w.aspect, a.audio_id, w.extractor, w.feature AS element, a.value AS x
    FROM wanted w JOIN audio_scalars a USING (extractor, feature)
    WHERE w.element IS NULL AND w.feature <> 'key'
    UNION ALL
    SELECT w.aspect, v.audio_id, w.extractor, w.feature || '[' || lpad(w.element::VARCHAR, 2, '0') || ']',
           v.vector[w.element]
    FROM wanted w JOIN audio_vectors v USING (extractor, feature)
    UNION ALL
    SELECT 'harmony', audio_id, 'key', 'key[' || part || ']',
           CASE part WHEN 'x' THEN cos(2 * pi() * fifths / 12) WHEN 'y' THEN sin(2 * pi() * fifths / 12)
                     ELSE major END
    FROM keys CROSS JOIN (VALUES ('x'), ('y'), ('scale')) AS p(part)
),
needs AS (SELECT aspect, count(DISTINCT extractor) AS extractors FROM similarity_features GROUP BY aspect),
members AS (  -- audio with a result of every extractor its aspect reads
    SELECT r.aspect, r.audio_id
    FROM raw r JOIN needs n USING (aspect)
    GROUP BY r.aspect, r.audio_id, n.extractors
    HAVING count(DISTINCT r.extractor) = n.extractors
),
elements AS (SELECT DISTINCT aspect, element FROM raw),
grid AS (  -- every element for every member, so that all vectors of an aspect line up
    SELECT m.aspect, m.audio_id, e.element, r.x
    FROM members m
    JOIN elements e USING (aspect)
    LEFT JOIN raw r USING (aspect, audio_id, element)
),
standard AS (
    SELECT aspect, audio_id, element,
           coalesce((x - avg(x) OVER byelement) / nullif(stddev_pop(x) OVER byelement, 0), 0) AS z
    FROM grid
    WINDOW byelement AS (PARTITION BY aspect, element)
)
SELECT aspect, audio_id, element, z FROM standard
UNION ALL
SELECT 'all', s.audio_id, s.aspect || ':' || s.element,
       s.z / sqrt(count(*) OVER (PARTITION BY s.aspect, s.audio_id))
FROM standard s
WHERE s.audio_id IN (SELECT audio_id FROM members GROUP BY audio_id HAVING count(*) = 3);

-- similarity_vectors: per aspect and audio, its standardised elements as one list, in element
-- order (the same elements, in the same order, for every audio of an aspect). catalog/similarity.py
-- casts them to a fixed-size array for array_cosine_distance.
CREATE OR REPLACE VIEW similarity_vectors AS
SELECT aspect, audio_id, list(z ORDER BY element) AS vector, list(element ORDER BY element) AS elements
FROM similarity_elements
GROUP BY aspect, audio_id;
