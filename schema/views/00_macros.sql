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
