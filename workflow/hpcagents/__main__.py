from hpcagents.cli import main

raise SystemExit(main())
