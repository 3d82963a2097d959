"""``python -m recurse_lambda.cli``: the command line, as the ``recurse-lambda`` script runs it."""

import sys

from . import main

sys.exit(main())
