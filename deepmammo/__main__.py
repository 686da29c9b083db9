from deepmammo.cli import main

raise SystemExit(main())
