from kzgate.cli import main

raise SystemExit(main())
