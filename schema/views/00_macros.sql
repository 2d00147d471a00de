-- Macros the views and muscat's own queries share. Installed with the views, first (files run
-- in name order), so every view below can use them.

-- run_subject: what a run's result belongs to, as one comparable value. Results of most
-- extractors belong to the audio (the content: copies and retags share them); those of
-- file-scoped extractors (probe, which reads the file itself) belong to the file. `scope` is
-- `extractor_current.scope`; `file` identifies the file (its file_id, or its path where only
-- that is at hand), `audio` the audio (audio_id). Two runs of one extractor describe the same
-- thing exactly when their subjects are equal: the views rank runs per subject, status and
-- feature_stats count subjects, gc and integrity checks compare them.
CREATE OR REPLACE MACRO run_subject(scope, file, audio) AS
    CASE WHEN scope = 'file' THEN file::VARCHAR ELSE audio END;

-- has_counted_run: whether the audio has a run of the extractor (`extractor_current`'s version
-- and params_hash given) that keeps it out of `pending`: an ok result in any version (one of an
-- older version is `stale` instead) or a failed run of the current identity (`failed`). The
-- `pending` view and `muscat status`'s counts (catalog/status.py) both ask it.
CREATE OR REPLACE MACRO has_counted_run(of_audio, of_extractor, current_version, current_params_hash) AS EXISTS (
    SELECT 1 FROM runs r
    WHERE r.audio_id = of_audio AND r.extractor = of_extractor
      AND (r.status = 'ok' OR (r.version = current_version AND r.params_hash = current_params_hash))
);
