"""Where the templates, alembic.ini and the migrations are: beside the source, or in the installed share folder.

A source checkout (and an editable install) reads them from the repository root. A regular install (the
container image) gets them as data files under `<prefix>/share/concord` (see pyproject.toml).
"""

import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
INSTALLED_ROOT = Path(sys.prefix) / "share" / "concord"


def resource_root() -> Path:
    return SOURCE_ROOT if (SOURCE_ROOT / "alembic.ini").is_file() else INSTALLED_ROOT
