"""pst-distill: distil step-by-step reasoning from a large teacher LLM into a small student
with Post-Semantic-Thinking, as a DVC pipeline.

One wing (sub-package) per stage, in pipeline order, and a few shared leaves:

    tasks/     prepare_data          task generators and hub loaders, the train/test split
    teacher/   generate_rationales   prompts, backends, the generation cache
    assemble/  assemble_dataset      the training sequences of every method, corruption
    embed/     embed_rationales      sentence embeddings of the semantic targets
    train/     train_student         the loop, the model and its semantic head, data, state
    evaluate/  evaluate_student      generation, the evaluation set, adaptive's modes, routers
    report/    report                tables, statistics, plots, the frontier, the sweep
    config/    every stage           one schema module per params section, a root, checks

    io parsing methods formats models scoring runtime   leaves every wing may use
"""
