import sys

from medclf_core.cli import main

sys.exit(main())
