"""`python -m s3_events_handler.entrypoints` is the `s3-events-handler` command."""

import sys

from s3_events_handler.entrypoints.cli import main

sys.exit(main())
