"""Shards over compressed objects (issue 12, item 6), and DecompressionError's place in the error tree."""

from __future__ import annotations

import recurse_lambda
from recurse_lambda import DecompressionError, RecurseLambdaError, s3
from recurse_lambda.config import PERMANENT_ERRORS
from recurse_lambda.s3 import _gzip_points


def test_decompression_error_is_public_permanent_and_still_a_value_error() -> None:
    assert issubclass(DecompressionError, RecurseLambdaError)
    assert issubclass(DecompressionError, ValueError)  # what it was before it joined the tree
    assert _gzip_points.DecompressionError is DecompressionError  # the old import still works
    assert s3.DecompressionError is DecompressionError
    assert "DecompressionError" in recurse_lambda.__all__
    assert DecompressionError.__module__ == "recurse_lambda"
    assert issubclass(DecompressionError, PERMANENT_ERRORS)
