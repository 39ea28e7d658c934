"""Release stage: export encoders to ONNX, build catalogs, indexes, feature tables and bundles."""
