import sys

from medclf_core.cli.commands import main

sys.exit(main())
