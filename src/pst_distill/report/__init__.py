"""The report wing: the report stage (:mod:`.build`), its comparison tables (:mod:`.tables`),
statistics (:mod:`.stats`), plots (:mod:`.plots`), the adaptive frontier (:mod:`.frontier`)
and the robustness sweep over DVC experiments (:mod:`.sweep`)."""
