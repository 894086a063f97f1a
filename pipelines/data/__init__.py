"""Raw events to a trusted lake: source adapters, the synthetic generator, ETL into date partitions with quarantine, validation, sampling and the lake check."""
