"""The embed wing: sentence embeddings of the semantic targets (:mod:`.encode`) and the
checked join of training rows to them (:mod:`.targets`, also read by training)."""
