"""Operating tools, not the node: the local demo (:mod:`.demo`), the WAN emulator
(:mod:`.wan`, :mod:`.wan_service`), ``meridian status`` (:mod:`.status`) and
``meridian backup`` / ``restore`` (:mod:`.backup`)."""
