from mrqart.cli import main

raise SystemExit(main())
