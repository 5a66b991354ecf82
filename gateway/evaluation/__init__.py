"""Continuous evaluation wired into the gateway: sampling observer, queue consumer, judge,
scheduled drift/retention/report jobs, and the rubric, feedback and read routes."""

from gateway.evaluation.service import EvalConfig, EvalService
from gateway.evaluation.serving import EvalServing

__all__ = ["EvalConfig", "EvalService", "EvalServing"]
