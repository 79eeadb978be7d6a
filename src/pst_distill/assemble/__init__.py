"""The assemble wing: the training sequences of every method (:mod:`.build`), with a
fraction of the rationales corrupted on request (:mod:`.corrupt`)."""
