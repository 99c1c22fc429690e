"""The generic machinery every job runs on: listing and shards, decoding, preflight, the schedule on Ray,
the output store with its commit, verify, progress and report. It knows no job; jobs register with it
(``pipeline.core.job``). See ``pipeline/README.md`` for the walk of one record.
"""
