"""Data: corpus reading, pretraining batches and task files."""
