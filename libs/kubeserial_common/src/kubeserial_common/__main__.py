from kubeserial_common.crdgen import main

raise SystemExit(main())
