"""Output: typed records that are the Parquet schema, atomic writes, the run lock, chunk parts,
resume and compaction into ``patients.parquet``, ``images.parquet`` and ``frames.parquet``.
"""
