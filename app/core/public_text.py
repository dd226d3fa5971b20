"""Error texts fit for users: what went wrong, without the server's insides.

Absolute paths become paths relative to the data directory (`datasets/<id>/manifest.json`) or,
outside it, just the file's name; SQL statements and their parameters are cut. The full text
still goes to the logs, next to the job id.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_DETAIL = re.compile(r"\s*\[(SQL|parameters):.*", re.DOTALL)
BACKGROUND_LINK = re.compile(r"\s*\(Background on this error at: [^)]*\)")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/-])/(?:[\w.@+-]+/)+([\w.@+-]+)")
MAX_PUBLIC_LENGTH = 2000


def public_message(text: str, data_dir: Path) -> str:
    for root in {str(data_dir.resolve()), str(data_dir.absolute())}:
        text = text.replace(root.rstrip("/") + "/", "")
    text = SQL_DETAIL.sub("", text)
    text = BACKGROUND_LINK.sub("", text)
    text = ABSOLUTE_PATH.sub(r"\1", text)
    return text[:MAX_PUBLIC_LENGTH]
