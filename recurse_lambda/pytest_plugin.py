"""pytest fixtures for testing ``@recursive`` handlers (registered as the ``recurse_lambda`` plugin)."""
