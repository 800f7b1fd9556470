"""Streaming training input: prepared Parquet read a row group at a time (``files``), the feature space fitted
in one pass over it (``fit``), bounded shuffle buffers (``shuffle``) and the training batches drawn through
them (``batches``). ``[train] shuffle_buffer > 0`` switches training onto this path; see docs/scaling.md."""
