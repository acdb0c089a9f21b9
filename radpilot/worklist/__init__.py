"""The reading room's worklist: studies with their priority, AI status and flags, reading state and claims.

It sits beside the validation workbench, above the engine: it reads the archive's
study index, the engine's job and flag rows and its own ``study_reading`` table in
one query per page (:mod:`radpilot.worklist.query`), claims studies atomically
(:mod:`radpilot.worklist.reading`), and reports what changed for live pages
(:mod:`radpilot.worklist.feed`). It never names an analysis: AI status comes from
the jobs, flags from what each analysis' ``flags.yaml`` raised.
"""
