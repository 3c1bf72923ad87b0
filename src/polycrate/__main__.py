from polycrate.cli import main

raise SystemExit(main())
