"""Live writes: write-ahead log, the single writer, snapshots, replay and index compaction."""
