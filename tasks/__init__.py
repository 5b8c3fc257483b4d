"""Plain functions of the pipeline (storage, shards, reports) and the thin Prefect tasks over them."""
