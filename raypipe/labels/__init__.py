"""The labels table and the nightly job that fills it: where the table lives and how it is read
(:mod:`.table`), one writer at a time (:mod:`.lease`), what a run does (:mod:`.plan`), the one-commit writer
(:mod:`.sink`) and the job (:mod:`.job`)."""
