"""``python -m medclf_core``: the ``medclf`` command (:func:`medclf_core.cli.commands.main`)."""

import sys

from medclf_core.cli.commands import main

sys.exit(main())
