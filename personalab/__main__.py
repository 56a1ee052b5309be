from personalab.cli import main

raise SystemExit(main())
