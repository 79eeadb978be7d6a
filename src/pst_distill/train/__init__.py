"""The train wing: the loop (:mod:`.loop`), the student with its semantic head (:mod:`.model`),
the loss as pure functions (:mod:`.losses`), tokenisation, batching and packing
(:mod:`.data`), resumable state (:mod:`.state`), checkpoints (:mod:`.checkpoint`), the run's
metrics (:mod:`.metrics`), its devices and processes (:mod:`.launch`) and optimizer
(:mod:`.optim`)."""
