"""`muscat status` counts done / pending / stale / failed with a query of its own
(catalog/status.py EXTRACTOR_COUNTS), cheaper to plan than counting the rows of the views. It must
give the views' numbers: here both count catalogues made at random to hold every case there is
(missing files, files outside any root, copies of one audio, unprobed and changed files, old
identities, stale inputs, failed runs, runs of a removed extractor, disabled and unavailable
extractors)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

import catalog

# What status counted before: the views' rows (schema/views/20_extractors.sql), as they define them.
VIEW_COUNTS = """
WITH shown AS (
    SELECT extractor,
           count(DISTINCT run_subject(scope, file_id, audio_id)) FILTER (WHERE current) AS done,
           count(DISTINCT run_subject(scope, file_id, audio_id)) FILTER (WHERE NOT current) AS stale
    FROM shown_file_runs GROUP BY extractor
),
waiting AS (SELECT extractor, count(*) AS pending FROM pending GROUP BY extractor),
failing AS (SELECT extractor, count(*) AS failed FROM failed GROUP BY extractor)
SELECT c.extractor, coalesce(s.done, 0), coalesce(w.pending, 0), coalesce(s.stale, 0), coalesce(f.failed, 0)
FROM extractor_current c
LEFT JOIN shown s USING (extractor) LEFT JOIN waiting w USING (extractor)
LEFT JOIN failing f USING (extractor)
ORDER BY c.extractor <> 'probe', c.extractor
"""

# (name, scope, enabled, available, uses): the current identity of each is version 2, hash 'h2'.
EXTRACTORS = [
    ("probe", "file", True, True, []),
    ("demucs", "audio", True, True, []),
    ("hpcp", "audio", True, True, ["demucs"]),
    ("key", "audio", False, True, []),
    ("drums", "audio", True, False, []),
    ("spectral", "audio", True, True, []),
]


def fill(db: catalog.Database, rng: random.Random) -> None:
    start = datetime(2026, 1, 1)

    def at() -> datetime:
        return start + timedelta(minutes=rng.randrange(1000))

    audio = [f"a{i}" for i in range(rng.randrange(3, 16))]
    with db.write() as con:
        for root_id in (1, 2, 3):
            con.execute("INSERT INTO roots VALUES (?, ?, ?, NULL, 'ok')", [root_id, f"/music/{root_id}", start])
        for audio_id in audio:
            con.execute("INSERT INTO audio VALUES (?, 180.0, 44100, 2, ?)", [audio_id, start])
        files = list(range(1, rng.randrange(5, 45)))
        for file_id in files:
            probed = None if rng.random() < 0.2 else at()
            changed = probed if probed and rng.random() < 0.2 else at()  # probed the moment it changed
            con.execute(
                "INSERT INTO files BY NAME SELECT ? AS file_id, ? AS root_id, '' AS dir, ? AS name, 1 AS size, "
                "0 AS mtime_ns, 0 AS dev, ? AS inode, ? AS audio_id, ? AS status, ? AS probed_at, "
                "? AS first_seen, ? AS changed_at",
                [file_id, rng.choice([1, 1, 2, 3, 4]),  # root 4 does not exist: not in library
                 f"{file_id}.flac", file_id, None if rng.random() < 0.15 else rng.choice(audio),
                 "present" if rng.random() < 0.8 else "missing", probed, start, changed],
            )
        for name, scope, enabled, available, uses in EXTRACTORS:
            con.execute("INSERT INTO extractor_current VALUES (?, 2, 'h2', 'cpu', ?, ?, ?, NULL, ?, ?)",
                        [name, scope, enabled, available, uses, start])
        names = [e[0] for e in EXTRACTORS] + ["removed"]
        for run_id in range(1, rng.randrange(10, 150)):
            extractor = rng.choice(names)
            version, params_hash = rng.choice([(2, "h2"), (2, "h2"), (2, "h1"), (1, "h1")])
            file_id = None if rng.random() < 0.1 else rng.choice(files + [999])
            status = "ok" if rng.random() < 0.7 else "failed"
            started = at()
            con.execute(
                "INSERT INTO runs BY NAME SELECT ? AS run_id, ? AS audio_id, ? AS file_id, ? AS extractor, "
                "? AS version, ? AS params_hash, ? AS input, ? AS status, 1 AS attempts, ? AS started_at, "
                "? AS finished_at, 1.0 AS seconds, 'cpu' AS device, 'here' AS host",
                [run_id, None if rng.random() < 0.1 else rng.choice(audio), file_id, extractor, version,
                 params_hash, rng.choice([None, "mix", "demucs:2:h2", "demucs:1:h1"]), status, started,
                 rng.choice([started, started + timedelta(seconds=1), start])],  # ties in finished_at too
            )


@pytest.mark.parametrize("seed", range(40))
def test_status_counts_are_the_views_counts(tmp_path, seed):
    db = catalog.Database(tmp_path / "cat.duckdb")
    try:
        fill(db, random.Random(seed))
        with db.read() as con:
            expected = con.execute(VIEW_COUNTS).fetchall()
        counted = catalog.status(db)["extractors"]
        assert [(name, *c.values()) for name, c in counted.items()] == [tuple(row) for row in expected]
        assert list(counted) == [e[0] for e in EXTRACTORS][:1] + sorted(e[0] for e in EXTRACTORS[1:])
    finally:
        db.close()


def test_the_cases_are_all_there(tmp_path):
    """The random catalogues above do reach each count (a comparison of zeros proves nothing)."""
    seen = {"done": 0, "pending": 0, "stale": 0, "failed": 0}
    for seed in range(5):
        db = catalog.Database(tmp_path / f"{seed}.duckdb")
        try:
            fill(db, random.Random(seed))
            for counts in catalog.status(db)["extractors"].values():
                for key, n in counts.items():
                    seen[key] += n
        finally:
            db.close()
    assert all(n > 0 for n in seen.values()), seen
