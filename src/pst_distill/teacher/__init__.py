"""The teacher wing: prompts (:mod:`.prompts`), backends behind one interface (:mod:`.base`:
reference, transformers, vLLM, any OpenAI-compatible server), the per-generation cache
(:mod:`.cache`) and the stage's logic (:mod:`.generate`: requests, scoring, filtering)."""
