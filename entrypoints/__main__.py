"""`python -m entrypoints` is the `s3-events-handler` command."""

import sys

from entrypoints.cli import main

sys.exit(main())
