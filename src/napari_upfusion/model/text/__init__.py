"""Text conditioning of UP-Fusion: prompts (:mod:`.prompts`, plain text), the CLIP text tower (:mod:`.clip`)
and the codes that reach the network, with their on-disk cache (:mod:`.codes`)."""
