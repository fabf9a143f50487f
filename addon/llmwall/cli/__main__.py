"""``python -m llmwall.cli``: the same as the ``llmwall`` command."""

import sys

from llmwall.cli.main import main

sys.exit(main())
