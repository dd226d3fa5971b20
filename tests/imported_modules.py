"""Which of some heavy modules importing a module pulls in, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def heavy_modules_imported(modules: list[str], heavy: list[str]) -> list[str]:
    """The names in `heavy` that `import <modules>` leaves in `sys.modules`."""
    code = (
        f"import sys, {', '.join(modules)}; "
        f"print(' '.join(name for name in {heavy!r} if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()
