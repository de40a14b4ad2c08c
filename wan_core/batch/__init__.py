"""Batches: many jobs (one video each) from a jobs.jsonl file, rendered in this process (wan_core.batch.local) or on
Ray actors across machines (wan_core.batch.ray_runner, optional `ray`), with an atomic, resumable output folder
(wan_core.batch.manifest). The command line is `python -m wan_core batch` (wan_core.batch.command).
"""
