"""Evaluation: traffic sampling, PII scrubbing, rubrics, drift and offline evaluation."""

__all__: list[str] = []
