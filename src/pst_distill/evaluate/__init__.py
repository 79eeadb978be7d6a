"""The evaluate wing: the evaluation set (:mod:`.select`), generation with each method's
stops (:mod:`.generate`), scoring and summaries (:mod:`.run`), the adaptive student's two
modes (:mod:`.modes`) and the routers that choose between them (:mod:`.routing`)."""
