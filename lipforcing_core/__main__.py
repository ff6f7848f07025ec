from .cli import main
from .demo.constants import LOADERS_MODULE
from .registry import add_plugin

add_plugin(LOADERS_MODULE)  # demo weight files open through the library's loaders (imported on first use)
raise SystemExit(main())
