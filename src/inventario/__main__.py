from inventario.cli import main

raise SystemExit(main())
