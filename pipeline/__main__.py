from pipeline.interfaces.cli import main

raise SystemExit(main())
