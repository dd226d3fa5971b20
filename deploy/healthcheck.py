"""The image's HEALTHCHECK, for whichever clipft process the container runs.

The probe is `clipft health`'s own (`app/health/probe.py`), run without the CLI: it imports the
standard library only, so a check every few seconds costs no torch, pydantic or Celery import.
`CLIPFT_HEALTHCHECK_ROLE` (api or worker) skips telling the two apart by the worker's liveness
file, and `CLIPFT_HEALTHCHECK_PORT` names the api's port (else the `--port` it was started with,
else 8000).
"""

import sys

from app.health.probe import main

sys.exit(main())
