"""The pytest plugin (entry point ``recurse_lambda``): fixtures for users' test suites (docs/testing.md).

The implementation lives in :mod:`recurse_lambda.testing.plugin`; this module is the public name pytest loads.
"""

from .testing.plugin import (
    ChainSimulation,
    LocalS3,
    embedded_s3,
    fault_schedule,
    lambda_context,
    pytest_configure,
    pytest_runtest_makereport,
    simulate,
    virtual_clock,
)

__all__ = [
    "ChainSimulation",
    "LocalS3",
    "embedded_s3",
    "fault_schedule",
    "lambda_context",
    "pytest_configure",
    "pytest_runtest_makereport",
    "simulate",
    "virtual_clock",
]
