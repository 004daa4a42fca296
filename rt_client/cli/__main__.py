"""``python -m rt_client.cli``: the same as the ``rt`` command."""

import sys

from rt_client.cli import main

sys.exit(main())
