from ingest_worker.cli import main

raise SystemExit(main())
