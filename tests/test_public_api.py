"""The public surface: __all__ sorted and in step with what the package defines; the import stays light."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import recurse_lambda
import recurse_lambda.local


@pytest.mark.parametrize("module", [recurse_lambda, recurse_lambda.local])
def test_all_is_sorted_and_lists_every_public_name(module):
    exported = module.__all__
    # isort style: CONSTANTS, then Classes, then functions (and dunders), each alphabetical
    assert exported == sorted(exported, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("recurse_lambda")
    }
    assert public <= set(exported), f"public but not exported: {public - set(exported)}"
    for name in exported:
        assert hasattr(module, name), name


def test_every_exported_error_derives_from_the_root():
    for name in recurse_lambda.__all__:
        value = getattr(recurse_lambda, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, recurse_lambda.RecurseLambdaError), name


def test_import_is_light_and_creates_no_client():
    code = textwrap.dedent(
        """
        import sys
        import recurse_lambda
        heavy = [m for m in ("boto3", "botocore", "moto", "argparse", "recurse_lambda.local",
                             "recurse_lambda.cli", "matplotlib") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_package_ships_its_type_marker():
    from importlib.resources import files

    assert files("recurse_lambda").joinpath("py.typed").is_file()


@pytest.mark.parametrize("module", [recurse_lambda, recurse_lambda.local])
def test_every_exported_exception_shows_its_public_module(module):
    # pytest and tracebacks print type(exc).__module__: users should read recurse_lambda.ChainFailed, the name
    # they import and catch, not recurse_lambda.errors.ChainFailed.
    exceptions = [
        value
        for value in (getattr(module, name) for name in module.__all__)
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(exceptions) > (20 if module is recurse_lambda else 2)
    for exc in exceptions:
        private = [part for part in exc.__module__.split(".") if part.startswith("_")]
        assert not private, f"{exc.__qualname__} shows as {exc.__module__}"
        assert getattr(sys.modules[exc.__module__], exc.__qualname__) is exc


def test_a_failed_chain_shows_its_public_name_in_a_traceback():
    import pickle
    import traceback

    error = recurse_lambda.ChainFailed("c1", "boom", {"i": 3})
    assert traceback.format_exception_only(error)[0] == "recurse_lambda.ChainFailed: chain c1 failed: boom\n"
    simple = recurse_lambda.ConfigurationError("bad")  # pickled by reference: the public name resolves
    assert type(pickle.loads(pickle.dumps(simple))) is recurse_lambda.ConfigurationError
