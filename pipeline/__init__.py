"""Ray and I/O: reading shards, decoding, inference actors, Parquet output, commit and resume."""
